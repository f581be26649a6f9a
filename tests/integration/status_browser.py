#!/usr/bin/env python3
"""Drives headless Chromium (Selenium) through the coordinator's status page.

Run by status_browser_test.cc against a MiniCluster; it can also be run by
hand against any coordinator. It writes OUT/result.json:

  {"checks": {"NAME": {"ok": true|false, "detail": "..."}, ...},
   "console": ["browser console lines (errors, CSP reports)"]}

and exits 0 once it has written it (the C++ test judges the checks), 77
when it cannot run here (no selenium, chromium or chromedriver; the reason
on stderr), and 1 on an error of its own.

`--probe` only checks that it could run.

Live progress needs the test's help: with the bench job's workers paused,
the script writes OUT/resume-workers once the job page shows the job's
first progress, and the test resumes them; the page must then show more
shards accepted without a reload.
"""

import argparse
import json
import os
import shutil
import sys
import time
import traceback
import urllib.error
import urllib.request

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu",
                  "--disable-dev-shm-usage", "--window-size=1280,1000"]


def find_browser():
    """(chromium, chromedriver) paths, or raises RuntimeError saying what is missing."""
    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                     if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    if not chromium:
        raise RuntimeError("no chromium on PATH (Debian package chromium)")
    if not driver:
        raise RuntimeError("no chromedriver on PATH (Debian package chromium-driver)")
    return chromium, driver


def probe():
    try:
        import selenium  # noqa: F401
    except ImportError:
        print("python module selenium is missing (Debian package python3-selenium) for "
              + sys.executable, file=sys.stderr)
        return 77
    try:
        find_browser()
    except RuntimeError as e:
        print(str(e), file=sys.stderr)
        return 77
    return 0


class Checks:
    def __init__(self):
        self.results = {}

    def record(self, name, ok, detail=""):
        self.results[name] = {"ok": bool(ok), "detail": str(detail)}
        print(("PASS " if ok else "FAIL ") + name + ": " + str(detail), flush=True)


def wait_for(cond, timeout_s, poll_s=0.1):
    """The first truthy cond() within timeout_s, else None."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            v = cond()
        except Exception:  # the page is being redrawn under us
            v = None
        if v:
            return v
        if time.monotonic() > deadline:
            return None
        time.sleep(poll_s)


def start_driver(out_dir):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    chromium, driver_path = find_browser()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for f in CHROMIUM_FLAGS:
        opts.add_argument(f)
    opts.add_argument("--user-data-dir=" + os.path.join(out_dir, "chromium-profile"))
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver_path,
                      log_path=os.path.join(out_dir, "chromedriver.log"))
    d = webdriver.Chrome(service=service, options=opts)
    d.set_page_load_timeout(20)
    d.set_script_timeout(20)
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--probe", action="store_true")
    ap.add_argument("--url", help="http(s)://HOST:PORT")
    ap.add_argument("--token")
    ap.add_argument("--expect-workers", help="online,idle,busy as `pcfarm workers --json` counts")
    ap.add_argument("--progress-job", type=int, help="a bench job whose workers are paused")
    ap.add_argument("--finetune-job", type=int, help="a fine-tuning job with rounds")
    ap.add_argument("--cancel-job", type=int, help="a job to cancel with the page's button")
    ap.add_argument("--out", help="result.json, resume-workers, browser profile")
    ap.add_argument("--screenshots", help="where the PNGs go")
    a = ap.parse_args()
    if a.probe:
        return probe()
    if probe() != 0:
        return 77
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(a.screenshots, exist_ok=True)
    from selenium.webdriver.common.by import By

    checks = Checks()
    console = []
    d = start_driver(a.out)
    try:
        # Read in one script: the page redraws its rows every second, and an
        # element found a moment ago may be gone (stale) by the next call.
        def text(css):
            return d.execute_script(
                "const e = document.querySelector(arguments[0]);"
                "return e ? e.textContent.trim() : null;", css)

        def drain_console():
            for entry in d.get_log("browser"):
                console.append(entry.get("level", "") + " " + entry.get("message", ""))

        def nav_status():
            return d.execute_script(
                "const n = performance.getEntriesByType('navigation')[0];"
                "return n ? n.responseStatus : null;")

        # ---- a wrong token: 401 and nothing of the farm ----
        d.get(a.url + "/login?token=" + "0" * 64)
        body = d.find_element(By.TAG_NAME, "body").text
        status = nav_status()
        checks.record("wrong_token_401",
                      status == 401 and "401" in body and "Overview" not in body
                      and not d.find_elements(By.CSS_SELECTOR, "#workers_online"),
                      "HTTP %s, body %r" % (status, body[:120]))
        d.get(a.url + "/workers")
        status = nav_status()
        checks.record("no_session_401", status == 401 and not d.find_elements(By.TAG_NAME, "table"),
                      "GET /workers without a session: HTTP %s" % status)
        # And not through the page's fetches either: a plain client gets 401.
        try:
            urllib.request.urlopen(a.url + "/api/v1/overview", timeout=10)
            checks.record("api_without_token_401", False, "the API answered without a token")
        except urllib.error.HTTPError as e:
            checks.record("api_without_token_401", e.code == 401, "HTTP %d" % e.code)

        # The refusals above are logged as failed loads (their favicon's
        # too); from here on the console must stay clean.
        drain_console()
        console.clear()

        # ---- login through the URL ----
        d.get(a.url + "/login?token=" + a.token)
        live = wait_for(lambda: d.find_element(By.ID, "live").get_attribute("class") == "ok"
                        and d.find_element(By.ID, "live").text, 10)
        checks.record("login", d.current_url.rstrip("/") == a.url.rstrip("/")
                      and text("h1") == "Overview" and live,
                      "at %s, h1 %r, live %r" % (d.current_url, text("h1"), live))

        # ---- the overview's counts equal the CLI's ----
        online, idle, busy = (int(x) for x in a.expect_workers.split(","))
        want = {"workers_online": online, "workers_idle": idle, "workers_busy": busy}

        def tiles():
            return {k: int(text("#" + k)) for k in want}
        got = wait_for(lambda: tiles() if tiles() == want else None, 10)
        checks.record("overview_counts", got == want, "page %s, CLI %s" % (
            got or tiles(), want))
        d.save_screenshot(os.path.join(a.screenshots, "overview.png"))

        # ---- cancel through the page's button ----
        d.get(a.url + "/jobs/%d" % a.cancel_job)
        wait_for(lambda: d.find_element(By.ID, "live").get_attribute("class") == "ok", 10)
        d.find_element(By.ID, "cancel").click()
        result = wait_for(lambda: text("#result"), 15)
        state = wait_for(lambda: "cancelled" if text("#rows tr td:nth-child(3)") == "cancelled"
                         else None, 10)
        checks.record("cancel_button", result == "done" and state == "cancelled",
                      "result %r, state on the page %r" % (result, text("#rows tr td:nth-child(3)")))

        # ---- live progress, no reload ----
        d.get(a.url + "/jobs/%d" % a.progress_job)
        d.execute_script("window.__not_reloaded = true;")
        wait_for(lambda: d.find_element(By.ID, "live").get_attribute("class") == "ok", 10)

        def accepted():
            t = text("#rows tr td:nth-child(4)").split()[-1]  # "A/T"
            return int(t.split("/")[0]), int(t.split("/")[1])
        before = accepted()
        with open(os.path.join(a.out, "resume-workers"), "w") as f:
            f.write("now\n")
        moved = wait_for(lambda: accepted() if accepted()[0] > before[0] else None, 30)
        same_page = d.execute_script("return window.__not_reloaded === true;")
        value = d.execute_script("return document.querySelector('#rows progress').value;")
        checks.record("live_progress", moved and same_page and value > 0,
                      "accepted %s before, %s later, progress bar %s, same page %s" % (
                          before, moved, value, same_page))
        # The throughput plot draws from what this page saw.
        wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#throughput polyline"), 5)
        d.save_screenshot(os.path.join(a.screenshots, "job-bench.png"))

        # ---- sorting the workers table ----
        d.get(a.url + "/workers")
        wait_for(lambda: d.find_element(By.ID, "live").get_attribute("class") == "ok", 10)

        def column(i):
            return d.execute_script(
                "return [...document.querySelectorAll('#rows tr')]"
                ".map((tr) => tr.children[arguments[0]].textContent);", i)
        headers = d.find_elements(By.CSS_SELECTOR, "table.sortable th")
        name_col = [h.text for h in headers].index("name")
        headers[name_col].click()
        up = wait_for(lambda: column(name_col) if column(name_col) == sorted(column(name_col))
                      else None, 5)
        headers[name_col].click()
        down = wait_for(lambda: column(name_col) if column(name_col) == sorted(
            column(name_col), reverse=True) else None, 5)
        # The order must survive the next poll's redraw.
        time.sleep(1.5)
        kept = column(name_col)
        checks.record("workers_sort", up and down and len(up) >= 2 and up != down
                      and kept == down, "ascending %s, descending %s, after a poll %s" % (
                          up, down, kept))
        id_col = [h.text for h in headers].index("id")
        headers[id_col].click()
        ids = wait_for(lambda: column(id_col) if [int(x) for x in column(id_col)] == sorted(
            int(x) for x in column(id_col)) else None, 5)
        checks.record("workers_sort_numeric", ids, "ids %s" % column(id_col))

        # ---- the workers table a page at a time ----
        d.get(a.url + "/workers?per_page=2")
        wait_for(lambda: d.find_element(By.ID, "live").get_attribute("class") == "ok", 10)
        first = wait_for(lambda: column(id_col) if len(column(id_col)) == 2 else None, 5)
        total = text("#total")
        d.find_element(By.ID, "next").click()
        second = wait_for(lambda: column(id_col) if column(id_col) != first else None, 5)
        next_off = d.execute_script("return document.getElementById('next').disabled;")
        d.find_element(By.ID, "prev").click()
        back = wait_for(lambda: column(id_col) if column(id_col) == first else None, 5)
        checks.record("workers_paging",
                      first and second and back and total == "3" and len(second) == 1
                      and int(second[0]) > int(first[1]) and next_off,
                      "page 1 %s, page 2 %s, back %s, total %r, next disabled on the last %s"
                      % (first, second, back, total, next_off))

        # ---- the fine-tuning job's loss curve ----
        d.get(a.url + "/jobs/%d" % a.finetune_job)
        wait_for(lambda: d.find_element(By.ID, "live").get_attribute("class") == "ok", 10)

        def loss_points():
            # After a poll redrew the plots (the page's script fetched them).
            line = d.find_element(By.CSS_SELECTOR,
                                  "#plots svg[data-plot='loss'] polyline")
            pts = line.get_attribute("points").split()
            return pts if len(pts) >= 2 else None
        pts = wait_for(loss_points, 10)
        shown = d.execute_script(
            "const s = document.querySelector(\"#plots svg[data-plot='loss']\");"
            "if (!s) return null; const r = s.getBoundingClientRect();"
            "return [r.width, r.height];")
        checks.record("loss_curve", pts and shown and shown[0] > 100 and shown[1] > 50,
                      "points %s, drawn %s" % (pts, shown))
        d.save_screenshot(os.path.join(a.screenshots, "job-finetune.png"))

        # ---- quarantine and unban through a worker's page ----
        wid = first[0] if first else "1"
        d.get(a.url + "/workers/%s" % wid)
        wait_for(lambda: d.find_element(By.ID, "live").get_attribute("class") == "ok", 10)

        def worker_state():
            return text("#rows tr td:nth-child(3)")
        d.find_element(By.ID, "quarantine").click()
        banned = wait_for(lambda: worker_state() if worker_state() == "quarantined" else None, 10)
        banned_result = text("#result")
        d.find_element(By.ID, "unban").click()
        lifted = wait_for(lambda: worker_state() if worker_state() not in (None, "quarantined")
                          else None, 10)
        checks.record("quarantine_unban", banned == "quarantined" and banned_result == "done"
                      and lifted is not None,
                      "worker %s: after quarantine %r (%r), after unban %r" % (
                          wid, banned, banned_result, worker_state()))

        drain_console()
        # Errors in the console: a script error, a CSP refusal, a failed fetch.
        errors = [c for c in console if c.startswith("SEVERE")]
        checks.record("no_console_errors", not errors, "; ".join(errors)[:2000])
    except Exception:
        checks.record("script_ran_to_the_end", False, traceback.format_exc())
    finally:
        try:
            drain_console()
        except Exception:
            pass
        d.quit()
    with open(os.path.join(a.out, "result.json"), "w") as f:
        json.dump({"checks": checks.results, "console": console}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
