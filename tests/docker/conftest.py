"""Fixtures of the container tests: one private Docker engine and one image per test session.

Where the engine cannot start (no root, a package missing, dockerd refusing), the tests are
skipped on a laptop and fail under CI (``CI`` set), naming why, as a missing service does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import IN_CI, ROOT
from tests.docker.engine import DockerEngine, EngineUnavailable, start_engine


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    try:
        engine = start_engine()
    except EngineUnavailable as exc:
        _unavailable(str(exc))
        raise AssertionError("unreachable") from exc
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def tickwork_image(docker_engine: DockerEngine, request: pytest.FixtureRequest) -> str:
    """``tickwork:dev`` built on the local base image; its build times go to results/docker/."""
    timings = docker_engine.build_image()
    out = ROOT / "results" / "docker"
    out.mkdir(parents=True, exist_ok=True)
    (out / "image.json").write_text(json.dumps(timings, indent=2) + "\n")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"docker: image built {timings}")
    return "tickwork:dev"
