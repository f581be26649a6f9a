#!/usr/bin/env python3
"""Prints the end of each failed test's output from a ctest build tree.

CI shows only the end of its log; the sanitizer stage's failures would
otherwise be cut off above ctest's summary. Usage: failed_output.py BUILD [N]
(N: lines of each failed test's output, default 120). With --digest instead
of N: a few lines a failed test, the Catch2 cases that failed and where
(file:line and the expression), for the very end of the log, where even a
short tail shows them.
"""
import os
import sys

build = sys.argv[1]
digest = len(sys.argv) > 2 and sys.argv[2] == "--digest"
keep = int(sys.argv[2]) if len(sys.argv) > 2 and not digest else 120
log = os.path.join(build, "Testing", "Temporary", "LastTest.log")
try:
    text = open(log, encoding="utf-8", errors="replace").read().splitlines()
except OSError as e:
    print(f"(no ctest log: {e})")
    sys.exit(0)



def print_digest(test, lines, most=4):
    """One line a failed Catch2 assertion: case, file:line, expression."""
    case, shown, failures = "?", 0, 0
    for i, l in enumerate(lines):
        # A case's header: its name between two lines of dashes.
        if l.startswith("-----") and i + 2 < len(lines) and lines[i + 2].startswith("-----"):
            case = lines[i + 1].strip()
        if l.rstrip().endswith(": FAILED:") or "FATAL ERROR" in l:
            failures += 1
            if shown < most:
                where = os.path.basename(l.rstrip().rsplit(": ", 1)[0])
                expr = lines[i + 1].strip() if i + 1 < len(lines) else ""
                if i + 3 < len(lines) and lines[i + 2].startswith("with expansion"):
                    expr += " -> " + lines[i + 3].strip()
                print(f"{test}: '{case}' {where} {expr}"[:240])
                # The assertion's message (a Status's text: why a wait
                # timed out, what a stalled job waited for), joined.
                msg, k = [], i + 1
                while k < len(lines) and k < i + 6 and not lines[k].startswith("with message"):
                    k += 1
                if k < len(lines) and lines[k].startswith("with message"):
                    k += 1
                    while k < len(lines) and lines[k].startswith("  "):
                        msg.append(lines[k].strip())
                        k += 1
                if msg:
                    print("  " + " ".join(msg)[:1200])
                shown += 1
    if failures == 0:
        print(f"{test}: no Catch2 failure in its output (crash, sanitizer or timeout)")
    elif failures > shown:
        print(f"{test}: {failures - shown} more failures")


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
        if digest:
            print_digest(name, out)
        else:
            print(f"==== {name}: last {min(keep, len(out))} of {len(out)} lines ====")
            for l in out[-keep:]:
                print(l)
        name = None
