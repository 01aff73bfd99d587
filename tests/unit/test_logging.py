"""Structured log lines: JSON or text, with the attempt's ids from ``extra=`` or ``log_context``."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from tickwork.config import configure_logging, log_context
from tickwork.config.logging import JsonFormatter, TextFormatter

pytestmark = pytest.mark.unit


def record(message: str = "attempt finished", **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("tickwork.worker", logging.INFO, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_line_has_the_ids() -> None:
    line = JsonFormatter().format(record(job_id=3, run_id=17, attempt=2, worker_id="w-1", message_id="m-9"))
    data = json.loads(line)
    assert data["event"] == "attempt finished"
    assert data["level"] == "info"
    assert data["logger"] == "tickwork.worker"
    assert (data["job_id"], data["run_id"], data["attempt"], data["worker_id"], data["message_id"]) == (
        3,
        17,
        2,
        "w-1",
        "m-9",
    )
    assert data["ts"].endswith("+00:00")
    assert "\n" not in line


def test_bound_context_reaches_every_line_and_extra_wins() -> None:
    with log_context(job_id=3, run_id=17, attempt=1, worker_id=None):
        data = json.loads(JsonFormatter().format(record(attempt=2)))
        with log_context(message_id="m-1"):
            inner = json.loads(JsonFormatter().format(record()))
    outside = json.loads(JsonFormatter().format(record()))
    assert (data["job_id"], data["run_id"], data["attempt"]) == (3, 17, 2)
    assert "worker_id" not in data
    assert inner["message_id"] == "m-1" and inner["run_id"] == 17
    assert "run_id" not in outside and "message_id" not in outside


def test_context_is_per_thread() -> None:
    seen: list[str] = []

    def other() -> None:
        seen.append(JsonFormatter().format(record()))

    with log_context(run_id=5):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert "run_id" not in json.loads(seen[0])


def test_text_line_is_one_line_with_quoted_values() -> None:
    line = TextFormatter().format(record("claimed", job_id=3, job_name="nightly report", run_id=17))
    assert line.endswith('claimed job_id=3 job_name="nightly report" run_id=17')
    assert "INFO" in line and "tickwork.worker" in line
    assert line[:4].isdigit() and "Z " in line


def test_text_exception_keeps_ids_on_the_event_line() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        rec = logging.LogRecord("tickwork", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    rec.run_id = 4
    first, *rest = TextFormatter().format(rec).splitlines()
    assert first.endswith("failed run_id=4")
    assert any("ValueError: bad" in line for line in rest)


def test_json_exception_is_one_line() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        rec = logging.LogRecord("tickwork", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    assert "ValueError: bad" in json.loads(line)["exc"]


def test_configure_logging_is_idempotent_and_picks_the_format(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        configure_logging("INFO", "text")
        configure_logging("DEBUG", "json")
        ours = [h for h in root.handlers if getattr(h, "_tickwork", False)]
        assert len(ours) == 1
        assert isinstance(ours[0].formatter, JsonFormatter)
        assert logging.getLogger("pika").level == logging.WARNING
        logging.getLogger("tickwork.test").info("hello", extra={"run_id": 8})
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert json.loads(err)["run_id"] == 8
    finally:
        for handler in list(root.handlers):
            if handler not in before:
                root.removeHandler(handler)
        root.setLevel(level)


def test_exclusive_replaces_a_foreign_root_handler(capsys: pytest.CaptureFixture[str]) -> None:
    """A Dramatiq worker process has its own basicConfig handler; exclusive takes over."""
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    foreign = logging.StreamHandler()
    foreign.setFormatter(logging.Formatter("[dramatiq] %(message)s"))
    root.addHandler(foreign)
    try:
        configure_logging("INFO", "json", exclusive=True)
        assert foreign not in root.handlers
        with log_context(run_id=12, attempt=1, worker_id="w-9"):
            logging.getLogger("tickwork.middleware").warning("attempt failed")
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1
        data = json.loads(lines[0])
        assert (data["event"], data["run_id"], data["worker_id"]) == ("attempt failed", 12, "w-9")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in before:
            root.addHandler(handler)
        root.setLevel(level)
