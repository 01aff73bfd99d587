"""A user's strict mypy run sees ``@job`` and ``@job(...)`` as typed decorators."""

from __future__ import annotations

from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[2]

USER_MODULE = """
from tickwork import job


@job
def plain() -> int:
    return 1


@job(cron="*/5 * * * *", retries=2, name="typed-report")
def report(day: str) -> str:
    return day


def cleanup() -> None:
    pass


registered = job(cleanup, name="typed-cleanup", timeout=2.5)

reveal_type(plain)
reveal_type(report)
reveal_type(registered)
"""

#: A keyword of the wrong type is an error, not silently ``Any``.
WRONG_MODULE = """
from tickwork import job


@job(retries="three")
def bad() -> None:
    pass
"""


def test_job_decorator_is_typed_under_strict_mypy(tmp_path: Path, monkeypatch) -> None:
    """``from tickwork import job`` went through a lazy module ``__getattr__`` returning Any, so a
    user's ``mypy --strict`` reported every decorated function as untyped."""
    (tmp_path / "user_jobs.py").write_text(USER_MODULE)
    (tmp_path / "wrong_jobs.py").write_text(WRONG_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MYPYPATH", str(ROOT))  # an editable install is invisible to mypy
    flags = ["--strict", "--follow-imports=silent", "--cache-dir", str(tmp_path / "cache")]
    out, err, status = api.run(["user_jobs.py", *flags])
    assert status == 0, out + err
    assert out.count('Revealed type is "tickwork.actors.decorator.JobFunction"') == 3, out
    out, err, status = api.run(["wrong_jobs.py", *flags])
    assert status == 1, out + err
    assert 'No overload variant of "job" matches argument type "str"' in out, out
