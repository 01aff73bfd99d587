"""Issue 14 in the dashboard (headless Chromium, live ``tickwork api`` on MariaDB): filter by tag,
edit a job with If-Match (a concurrent edit is refused with 412, nothing changed), delete it,
read the Events tab."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.browser.test_dashboard import WAIT_MS, api_url, browser, log_in, shot  # noqa: F401
from tickwork.api.auth import create_token
from tickwork.config import Settings

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


def test_edit_with_if_match_delete_tags_and_events(
    browser: Any,  # noqa: F811 - the fixture imported above
    api_url: str,  # noqa: F811
    cluster_settings: Settings,
) -> None:
    token = create_token(cluster_settings, "admin")
    client = httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    body = {"name": "ui-edit", "handlerType": "http", "handlerData": "http://127.0.0.1:9/x", "tags": ["blue"]}
    job = client.post("/jobs", json=body).json()
    client.post("/jobs", json={**body, "name": "ui-other", "tags": ["red"]})
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.on("dialog", lambda dialog: dialog.accept())
    log_in(page, api_url, token)
    page.fill("#tag-filter", "blue")
    page.press("#tag-filter", "Tab")  # change event; focus leaves the input so the view refreshes
    page.wait_for_selector("tr[data-job='ui-other']", state="detached", timeout=WAIT_MS)
    assert page.locator("tr[data-job='ui-edit']").count() == 1

    # Open the editor, then someone else edits the job: saving is refused, nothing changes.
    page.goto(f"{api_url}/ui#/jobs/{job['id']}")
    page.click("#edit-job")
    page.wait_for_selector("#edit-job-form", timeout=WAIT_MS)
    assert client.patch(f"/jobs/{job['id']}", json={"retryCount": 4}).status_code == 200
    page.fill("#edit-job-form input[name=retryCount]", "7")
    page.click("#edit-job-form button[type=submit]")
    page.locator("#flash", has_text="changed by someone else").wait_for(timeout=WAIT_MS)
    assert client.get(f"/jobs/{job['id']}").json()["retryCount"] == 4
    shot(page, "issue14-edit-412")
    # Reopen from the new version: the save applies.
    page.click("#edit-job-form button[type=button]")
    page.locator("#view dl.props", has_text="4 (backoff").wait_for(timeout=WAIT_MS)  # the new version
    page.click("#edit-job")
    page.wait_for_selector("#edit-job-form", timeout=WAIT_MS)
    assert page.input_value("#edit-job-form input[name=retryCount]") == "4"
    page.fill("#edit-job-form input[name=retryCount]", "7")
    page.fill("#edit-job-form input[name=tags]", "blue, green")
    page.fill("#edit-job-form input[name=maxConcurrency]", "2")
    page.click("#edit-job-form button[type=submit]")
    page.locator("#flash", has_text="Saved job").wait_for(timeout=WAIT_MS)
    saved = client.get(f"/jobs/{job['id']}").json()
    assert (saved["retryCount"], saved["tags"], saved["maxConcurrency"]) == (7, ["blue", "green"], 2)
    # The job's view is rendered again after the save: wait for the new event's row (the old
    # view's rows are there at once, so waiting for any row could read the table before it).
    page.locator("#job-events-table tr[data-event]", has_text="retryCount: 4 → 7").wait_for(timeout=WAIT_MS)

    # Delete (the confirm dialog is accepted): back to the list, the job is gone.
    page.click("#delete-job")
    page.wait_for_selector("#jobs-table", timeout=WAIT_MS)
    assert client.get(f"/jobs/{job['id']}").status_code == 404

    page.goto(f"{api_url}/ui#/events")
    page.wait_for_selector("#events-table tr[data-event]", timeout=WAIT_MS)
    text = page.inner_text("#events-table")
    assert "job.deleted" in text and "job.updated" in text
    page.select_option("#event-kind", "job.deleted")
    page.locator("#events-table tr[data-event]", has_text="job.updated").first.wait_for(
        state="detached", timeout=WAIT_MS
    )
    shot(page, "issue14-events")
    client.close()
