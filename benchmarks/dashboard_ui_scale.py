"""Dashboard pages in headless Chromium on the 10,000-job / 1,000,000-run database.

    PYTHONPATH=. python benchmarks/dashboard_scale.py --keep      # fill tickwork_bench_dashboard
    PYTHONPATH=. python benchmarks/dashboard_ui_scale.py          # time the pages, save screenshots

Starts ``tickwork api`` on a free port against that database, logs in with a viewer token and
prints the time from navigation to the first rendered rows of each page (one sample each).
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from tickwork.api.auth import create_token
from tickwork.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGES = (
    ("job 5000 + its runs", "#/jobs/5000", "#runs-table tr[data-run]"),
    ("dead letters", "#/dlq", "#dlq-table tr[data-run]"),
    ("charts (last hour)", "#/charts", "#runs-chart svg rect"),
    ("cluster", "#/cluster", "#leader"),
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", default="mysql+pymysql://root@127.0.0.1:3306/tickwork_bench_dashboard")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWORK_")}
    env.update(
        PYTHONPATH=str(ROOT),
        TICKWORK_DATABASE_URL=args.database,
        TICKWORK_NAMESPACE="twbenchui",
        TICKWORK_LOG_LEVEL="WARNING",
        TICKWORK_AUTH_SECRET=secrets.token_urlsafe(32),  # a shared database needs its own secret
    )
    command = [sys.executable, "-m", "tickwork", "api", "--host", "127.0.0.1", "--port", str(port)]
    api = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    shots = ROOT / "results" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.2)
        token = create_token(load_settings(auth_secret=env["TICKWORK_AUTH_SECRET"]), "viewer")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url + "/ui")
            page.fill("#token", token)
            start = time.perf_counter()
            page.click("#login-form button[type=submit]")
            page.wait_for_selector("#jobs-table tr[data-job]")
            print(f"{'jobs page 1 (50 of 10,000)':<28} {1000 * (time.perf_counter() - start):6.0f} ms")
            page.screenshot(path=str(shots / "scale-jobs.png"))
            for label, fragment, selector in PAGES:
                start = time.perf_counter()
                page.goto(url + "/ui" + fragment)
                page.wait_for_selector(selector)
                print(f"{label:<28} {1000 * (time.perf_counter() - start):6.0f} ms")
                page.screenshot(path=str(shots / f"scale-{fragment.strip('#/').replace('/', '-')}.png"))
            browser.close()
    finally:
        api.terminate()
        api.wait(timeout=10)


if __name__ == "__main__":
    main()
