#!/usr/bin/env python3
"""Prints the end of each failed test's output from a ctest build tree.

CI shows only the end of its log; the sanitizer stage's failures would
otherwise be cut off above ctest's summary. Usage: failed_output.py BUILD [N]
(N: lines of each failed test's output, default 120).
"""
import os
import sys

build = sys.argv[1]
keep = int(sys.argv[2]) if len(sys.argv) > 2 else 120
log = os.path.join(build, "Testing", "Temporary", "LastTest.log")
try:
    text = open(log, encoding="utf-8", errors="replace").read().splitlines()
except OSError as e:
    print(f"(no ctest log: {e})")
    sys.exit(0)

name, out, inside = None, [], False
for line in text:
    if " Testing: " in line and not inside:
        name, out = line.split(" Testing: ", 1)[1].strip(), []
    elif line.startswith("Output:") and name is not None:
        inside = True
    elif line.startswith("<end of output>"):
        inside = False
    elif inside:
        out.append(line)
    elif line.startswith("Test Failed") and name is not None:
        print(f"==== {name}: last {min(keep, len(out))} of {len(out)} lines ====")
        for l in out[-keep:]:
            print(l)
        name = None
