"""Issue 13 in the dashboard (Debian's headless Chromium, a live ``tickwork api`` on MariaDB):
each job's health badge, why a job is paused, and the health filter of the job list.

The job states are written as the worker's dead-letter hook and the scheduler's late sweep
write them (the same store functions), so the page shows what a cluster would.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, update

from tests.browser.test_dashboard import WAIT_MS, api_url, browser, shot  # noqa: F401 - fixtures
from tests.conftest import SEED
from tickwork.api.auth import create_token
from tickwork.config import Settings
from tickwork.spec import JobSpec
from tickwork.store.alerts import after_run_dead, sweep_late
from tickwork.store.jobs import create_job
from tickwork.store.models import jobs_table, runs_table, utcnow
from tickwork.store.runs import insert_run

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


def job(engine: Engine, name: str, **fields: Any) -> int:
    spec = JobSpec.model_validate({**SEED, "name": name, "cronExpression": "0 0 3 * * *", **fields})
    return create_job(engine, spec).id


def finished_run(engine: Engine, job_id: int, status: str, *, seconds_ago: int = 60) -> int:
    fire = utcnow().replace(microsecond=0) - timedelta(seconds=seconds_ago)
    run_id = insert_run(engine, job_id=job_id, scheduled_for=fire)
    with engine.begin() as conn:
        conn.execute(
            update(runs_table)
            .where(runs_table.c.id == run_id)
            .values(status=status, finished_at=fire + timedelta(seconds=1))
        )
        if status == "DEAD":
            after_run_dead(conn, run_id, notify_url=None, now=utcnow())
    return run_id


def test_health_badges_and_the_late_and_failing_filters(
    browser: Any,  # noqa: F811 - the fixture
    api_url: str,  # noqa: F811
    cluster_settings: Settings,
    mysql_engine: Engine,
) -> None:
    healthy = job(mysql_engine, "health-ok")
    finished_run(mysql_engine, healthy, "SUCCESS")
    failing = job(mysql_engine, "health-failing")
    finished_run(mysql_engine, failing, "SUCCESS", seconds_ago=120)
    finished_run(mysql_engine, failing, "DEAD")
    auto = job(mysql_engine, "health-auto-paused", pauseAfterFailures=1)
    finished_run(mysql_engine, auto, "DEAD")
    late = job(mysql_engine, "health-late", lateAfterSeconds=30)
    with mysql_engine.begin() as conn:  # no scheduler made its 03:00 fire yesterday
        conn.execute(
            update(jobs_table)
            .where(jobs_table.c.id == late)
            .values(next_fire_at=utcnow() - timedelta(minutes=10))
        )
    assert sweep_late(mysql_engine, notify_url=None, lookback_seconds=3600) == 1

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{api_url}/ui")
    page.wait_for_selector("#login-form", state="visible")
    page.fill("#token", create_token(cluster_settings, "viewer"))
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#jobs-table", timeout=WAIT_MS)

    expected = {
        "health-ok": "healthy",
        "health-failing": "failing",
        "health-auto-paused": "paused",
        "health-late": "late",
    }
    for name, health in expected.items():
        badge = page.wait_for_selector(f"tr[data-job='{name}'] .badge.health", timeout=WAIT_MS)
        assert badge.get_attribute("data-health") == health, name
        assert badge.inner_text() == health
        assert f"h-{health}" in (badge.get_attribute("class") or "")
    paused_row = page.inner_text("tr[data-job='health-auto-paused']")
    assert "auto: 1 consecutive dead runs" in paused_row
    shot(page, "10-health-badges")

    for health in ("late", "failing", "paused", "healthy"):
        page.select_option("#health-filter", health)
        page.wait_for_selector(
            f"tr[data-job] .badge.health:not([data-health='{health}'])", state="detached", timeout=WAIT_MS
        )
        shown = page.eval_on_selector_all("tr[data-job]", "rows => rows.map(r => r.dataset.job)")
        assert shown == [name for name, value in expected.items() if value == health], health
        if health in ("late", "failing"):
            shot(page, f"11-health-filter-{health}")
    page.select_option("#health-filter", "")
    page.wait_for_selector("tr[data-job='health-late']", timeout=WAIT_MS)
    assert len(page.query_selector_all("tr[data-job]")) == 4

    # The job page says why it is paused and when it last succeeded.
    page.goto(f"{api_url}/ui#/jobs/{failing}")
    page.wait_for_selector("#job-name", timeout=WAIT_MS)
    props = page.inner_text("dl.props")
    assert "failing" in props and "Last success" in props and "never" not in props.split("Last success")[1]
    page.goto(f"{api_url}/ui#/jobs/{auto}")
    page.wait_for_selector("dl.props:has-text('auto: 1 consecutive dead runs')", timeout=WAIT_MS)
    assert not errors, errors
