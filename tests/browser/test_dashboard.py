"""The dashboard in Debian's headless Chromium against a live ``tickwork api`` on MariaDB.

Log in with a token, create jobs through the form, see a scheduled job's runs appear as a real
scheduler and worker make them, pause it, replay a dead run from the dead-letter page, look at
the cluster and the charts. Screenshots go to
``results/screenshots/`` for a person to look at.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from tests.conftest import IN_CI, ROOT, settings_env, tickwork_cmd
from tickwork import keys
from tickwork.api.auth import create_token
from tickwork.config import Settings
from tickwork.store import RunStatus, utcnow
from tickwork.store.jobs import get_job_by_name
from tickwork.store.runs import claim_attempt, finish_attempt, insert_run, list_runs

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

CHROMIUM = os.environ.get("TICKWORK_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ROOT / "results" / "screenshots"
WAIT_MS = 15_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def api_url(cluster_settings: Settings, tmp_path: Path) -> Iterator[str]:
    """A live ``tickwork api`` subprocess on this test's database, broker and namespace."""
    port = free_port()
    env = settings_env(cluster_settings, api_host="127.0.0.1", api_port=port, log_format="json")
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen(tickwork_cmd("api"), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"tickwork api did not start:\n{(tmp_path / 'api.log').read_text()[-3000:]}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


@contextlib.contextmanager
def tickwork_process(settings: Settings, tmp_path: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``tickwork <args>`` on this test's namespace, logging to ``<tmp>/<command>.log``."""
    env = settings_env(settings, log_format="json")
    log = (tmp_path / f"{args[0]}.log").open("wb")
    proc = subprocess.Popen(tickwork_cmd(*args), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


@pytest.fixture
def worker(cluster_settings: Settings, api_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A live ``tickwork worker`` (one process, two threads) on this test's namespace."""
    args = ("worker", "--processes", "1", "--threads", "2", "--shutdown-timeout", "5")
    with tickwork_process(cluster_settings, tmp_path, *args) as proc:
        yield proc


@pytest.fixture
def scheduler(cluster_settings: Settings, api_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A live ``tickwork scheduler`` on this test's namespace: jobs made in the browser fire."""
    with tickwork_process(cluster_settings, tmp_path, "scheduler") as proc:
        yield proc


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        message = f"{CHROMIUM} is missing (scripts/test.sh installs Debian's chromium)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_log_in_create_trigger_and_replay(
    browser: Any, api_url: str, cluster_settings: Settings, mysql_engine: Engine
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    console_errors: list[str] = []
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: console_errors.append(str(exc)))

    # A bad token is refused and the login form says so.
    landing = page.goto(f"{api_url}/ui")
    # The page runs under a strict Content-Security-Policy (no inline script or style): every
    # step below proves the dashboard's own script still works, and a violation would be a
    # console error (checked at the end).
    assert landing is not None and "script-src 'self'" in landing.headers["content-security-policy"]
    assert landing.headers["x-frame-options"] == "DENY"
    page.wait_for_selector("#login-form", state="visible")
    assert not page.is_visible("#nav") and not page.is_visible("#logout")  # nothing to see before login
    shot(page, "01-login")
    page.fill("#token", "not-a-token")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-error:has-text('refused')", timeout=WAIT_MS)

    # Log in as admin.
    page.fill("#token", create_token(cluster_settings, "admin"))
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#jobs-table", timeout=WAIT_MS)
    assert page.inner_text("#who") == "role: admin"

    # Create a job through the form.
    page.fill("#create-job input[name=name]", "browser-report")
    page.fill("#create-job input[name=cronExpression]", "0 0 3 * * *")
    page.select_option("#create-job select[name=handlerType]", "http")
    page.fill("#create-job input[name=handlerData]", "http://127.0.0.1:9/report")
    page.fill("#create-job input[name=retryCount]", "2")
    page.click("#create-job button[type=submit]")
    page.wait_for_selector("#flash:has-text('Created job browser-report')", timeout=WAIT_MS)
    row = page.wait_for_selector("tr[data-job='browser-report']", timeout=WAIT_MS)
    assert "0 0 3 * * *" in row.inner_text()
    assert "never run" in row.inner_text()
    job = get_job_by_name(mysql_engine, "browser-report")
    assert job.retry_count == 2 and job.next_fire_at is not None
    shot(page, "02-jobs-created")

    # Trigger it from the list; the job page shows the new run without a reload.
    row.query_selector("button:has-text('Trigger')").click()  # type: ignore[union-attr]
    page.wait_for_selector("#flash:has-text('Triggered browser-report')", timeout=WAIT_MS)
    page.click("tr[data-job='browser-report'] a")
    page.wait_for_selector("#runs-table tr[data-run]", timeout=WAIT_MS)
    runs = list_runs(mysql_engine, job_id=job.id)
    assert len(runs) == 1 and runs[0].trigger == "manual"

    # A worker finishes that run (written as a worker would); the page picks it up on refresh.
    assert claim_attempt(mysql_engine, runs[0].id, "worker-browser-1")
    assert finish_attempt(
        mysql_engine, runs[0].id, "worker-browser-1", status=RunStatus.SUCCESS, output='{"status": 200}'
    )
    page.wait_for_selector(f"tr[data-run='{runs[0].id}'] .badge.s-SUCCESS", timeout=WAIT_MS)
    assert '{"status": 200}' in page.inner_text(f"tr[data-run='{runs[0].id}'] pre.output")
    shot(page, "03-job-runs")

    # A dead run: its retries were spent (written as the DeadLetter middleware would).
    fire = utcnow() - timedelta(minutes=2)
    for attempt in (1, 2, 3):
        run_id = insert_run(
            mysql_engine,
            job_id=job.id,
            scheduled_for=fire,
            attempt=attempt,
            status=RunStatus.PENDING,
            trigger="schedule" if attempt == 1 else "retry",
        )
        assert claim_attempt(mysql_engine, run_id, "worker-browser-1")
        final = RunStatus.DEAD if attempt == 3 else RunStatus.FAILED
        error = "HTTP 503 from http://127.0.0.1:9/report" if attempt == 3 else "connection refused"
        assert finish_attempt(mysql_engine, run_id, "worker-browser-1", status=final, error=error)
    dead_id = run_id

    page.click("#nav a[data-view=dlq]")
    dead_row = page.wait_for_selector(f"#dlq-table tr[data-run='{dead_id}']", timeout=WAIT_MS)
    assert "HTTP 503" in dead_row.inner_text()
    shot(page, "04-dlq")
    dead_row.query_selector("button:has-text('Replay')").click()  # type: ignore[union-attr]
    page.wait_for_selector(f"#flash:has-text('Replayed run {dead_id} as run')", timeout=WAIT_MS)
    page.wait_for_selector(f"#dlq-table tr[data-run='{dead_id}']", state="detached", timeout=WAIT_MS)
    replayed = [r for r in list_runs(mysql_engine, job_id=job.id) if r.trigger == "replay"]
    assert len(replayed) == 1 and replayed[0].status == RunStatus.PENDING
    shot(page, "05-dlq-replayed")

    page.goto(f"{api_url}/ui#/jobs/{job.id}")
    page.wait_for_selector(f"#runs-table tr[data-run='{replayed[0].id}']", timeout=WAIT_MS)
    assert "replay" in page.inner_text(f"#runs-table tr[data-run='{replayed[0].id}']")
    shot(page, "06-job-after-replay")

    # The cluster page reads the Redis keys schedulers and workers write.
    ns = cluster_settings.namespace
    assert cluster_settings.redis_url
    client = redis.Redis.from_url(cluster_settings.redis_url)
    client.set(keys.leader_key(ns), "sched-1 token", px=30_000)
    for node in ("sched-1", "sched-2"):
        presence = {"node_id": node, "host": "localhost", "pid": 100, "started_at": utcnow().isoformat()}
        client.set(keys.scheduler_node_key(ns, node), json.dumps(presence), ex=30)
    now_iso = utcnow().isoformat()
    heartbeat = {"worker_id": "worker-browser-1", "host": "localhost", "pid": 200, "beat_at": now_iso}
    client.set(keys.worker_heartbeat_key(ns, "worker-browser-1"), json.dumps(heartbeat), ex=30)
    client.close()
    page.click("#nav a[data-view=cluster]")
    page.wait_for_selector("#leader:has-text('sched-1')", timeout=WAIT_MS)
    assert page.inner_text("#live-workers") == "1"
    shot(page, "07-cluster")

    page.click("#nav a[data-view=charts]")
    page.wait_for_selector("#runs-chart svg rect", timeout=WAIT_MS)
    assert "SUCCESS 1" in page.inner_text("#runs-chart .legend")
    # Legend colours are set through the CSSOM, which the policy allows (a style attribute is not).
    swatch = page.eval_on_selector("#runs-chart .legend i", "el => getComputedStyle(el).backgroundColor")
    assert swatch not in ("", "rgba(0, 0, 0, 0)"), swatch
    shot(page, "08-charts")

    # Logging out forgets the token: the data pages need logging in again.
    page.click("#logout")
    page.wait_for_selector("#login-form", state="visible")
    assert page.evaluate("sessionStorage.getItem('tickwork.token')") is None
    # The one expected console error is the refused bad token at the start.
    unexpected = [e for e in console_errors if "401 (Unauthorized)" not in e]
    assert not unexpected, unexpected


def test_viewer_can_read_but_not_act(browser: Any, api_url: str, cluster_settings: Settings) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 700})
    page.goto(f"{api_url}/ui")
    page.fill("#token", create_token(cluster_settings, "viewer"))
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#jobs-table", timeout=WAIT_MS)
    assert page.inner_text("#who") == "role: viewer"
    assert page.query_selector("#create-job") is None
    assert "log in as admin" in page.inner_text("#view")


def log_in(page: Any, api_url: str, token: str) -> None:
    page.goto(f"{api_url}/ui")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#jobs-table", timeout=WAIT_MS)


def create_job_in_form(page: Any, name: str, url: str, retries: int, cron: str = "") -> None:
    page.fill("#create-job input[name=name]", name)
    page.fill("#create-job input[name=cronExpression]", cron)
    page.fill("#create-job input[name=handlerData]", url)
    page.fill("#create-job input[name=retryCount]", str(retries))
    page.fill("#create-job input[name=retryBackoffSeconds]", "0")
    page.click("#create-job button[type=submit]")
    page.wait_for_selector(f"tr[data-job='{name}']", timeout=WAIT_MS)


def test_real_worker_runs_appear_and_a_dead_run_is_replayed(
    browser: Any,
    api_url: str,
    scheduler: Any,
    worker: Any,
    cluster_settings: Settings,
    mysql_engine: Engine,
    httpbin_url: str,
) -> None:
    """End to end with a real scheduler and worker: a job made in the form fires on schedule and
    its runs go SUCCESS on screen; a failing job lands in the DLQ and is replayed from the page."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    log_in(page, api_url, create_token(cluster_settings, "admin"))
    create_job_in_form(page, "live-ok", f"{httpbin_url}/post", 0, cron="* * * * * *")
    create_job_in_form(page, "live-fail", f"{api_url}/no-such-page", 1)

    # No trigger: the scheduler fires it every second and the worker runs it.
    page.click("tr[data-job='live-ok'] a")
    # A locator, not wait_for_function: that evaluates a string, which the page's CSP forbids.
    page.locator("#runs-table .badge.s-SUCCESS").nth(1).wait_for(timeout=60_000)
    # The output is httpbin's echo of the POST; the status code has its own column. Read them in
    # a SUCCESS row: the newest row may be the next second's fire, still PENDING or RUNNING.
    success_row = page.locator("#runs-table tr:has(.badge.s-SUCCESS)").first
    assert '"url"' in success_row.locator("pre.output").inner_text()
    assert success_row.locator("td.http-status").inner_text() == "200"
    job_ok = get_job_by_name(mysql_engine, "live-ok")
    scheduled = [r for r in list_runs(mysql_engine, job_id=job_ok.id) if r.status == RunStatus.SUCCESS]
    assert len(scheduled) >= 2 and {r.trigger for r in scheduled} == {"schedule"}
    shot(page, "10-live-job-success")

    # Pause it from the list: the job is disabled and no further fires are made.
    page.click("#nav a[data-view=jobs]")
    page.click("tr[data-job='live-ok'] button:has-text('Pause')")
    page.wait_for_selector("#flash:has-text('Paused live-ok')", timeout=WAIT_MS)
    assert not get_job_by_name(mysql_engine, "live-ok").enabled
    time.sleep(1.5)  # a fire written just ahead of the pause may still land
    settled = len(list_runs(mysql_engine, job_id=job_ok.id, limit=1000))
    time.sleep(2.0)
    assert len(list_runs(mysql_engine, job_id=job_ok.id, limit=1000)) == settled

    page.wait_for_selector("tr[data-job='live-fail']", timeout=WAIT_MS)
    page.click("tr[data-job='live-fail'] button:has-text('Trigger')")
    page.wait_for_selector("#flash:has-text('Triggered live-fail')", timeout=WAIT_MS)
    page.click("#nav a[data-view=dlq]")
    # One retry (backoff 0 s), then the dead-letter queue.
    dead_row = page.wait_for_selector("#dlq-table tr[data-run]", timeout=60_000)
    assert "404" in dead_row.inner_text()  # POST to a missing page of the API
    dead_id = int(dead_row.get_attribute("data-run"))
    shot(page, "11-live-dlq")
    dead_row.query_selector("button:has-text('Replay')").click()  # type: ignore[union-attr]
    page.wait_for_selector(f"#flash:has-text('Replayed run {dead_id} as run')", timeout=WAIT_MS)
    job = get_job_by_name(mysql_engine, "live-fail")
    attempts = sorted(list_runs(mysql_engine, job_id=job.id), key=lambda r: r.id)
    assert [r.attempt for r in attempts][:2] == [1, 2]
    assert attempts[0].status == RunStatus.FAILED and attempts[1].status == RunStatus.REPLAYED
    assert attempts[2].trigger == "replay"
    # The replayed attempt fails again on the worker (the page still 404s) and is dead again.
    page.wait_for_selector(f"#dlq-table tr[data-run='{attempts[2].id}']", timeout=60_000)
    shot(page, "12-live-dlq-after-replay")

    page.click("#nav a[data-view=cluster]")
    page.wait_for_selector("#live-workers:has-text('1')", timeout=WAIT_MS)
    shot(page, "13-live-cluster")
