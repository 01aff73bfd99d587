"""The image's HEALTHCHECK: is the tickwork role that runs as PID 1 serving?

* ``tickwork api``: ``GET /healthz`` on its ``--port`` (or ``TICKWORK_API_PORT``) answers 200.
* ``tickwork scheduler`` / ``worker`` with ``TICKWORK_METRICS_PORT`` set: that port accepts a
  connection (a connect, not a scrape: a scrape runs the cluster gauges' queries).
* anything else (``db upgrade``, a scheduler or worker without a metrics port): healthy while
  the container runs, which is all Docker can see of it.

Exit status 0 is healthy, 1 unhealthy (Docker's convention); the reason goes to stdout, which
``docker inspect`` shows under ``State.Health``.
"""

from __future__ import annotations

import socket
import sys
import urllib.request
from pathlib import Path

from tickwork.config import load_settings

ROLES = ("api", "scheduler", "worker")
TIMEOUT_SECONDS = 3.0


def pid1_arguments() -> list[str]:
    """The arguments PID 1 was started with (the entrypoint execs ``tickwork ROLE ...``)."""
    return Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")


def role_and_options(argv: list[str]) -> tuple[str | None, list[str]]:
    for index, arg in enumerate(argv):
        if arg in ROLES:
            return arg, argv[index + 1 :]
    return None, []


def check() -> str:
    """Empty when healthy, else why not."""
    role, options = role_and_options(pid1_arguments())
    settings = load_settings()
    if role == "api":
        port = int(options[options.index("--port") + 1]) if "--port" in options else settings.api_port
        url = f"http://127.0.0.1:{port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
                return "" if response.status == 200 else f"{url} answered {response.status}"
        except OSError as exc:
            return f"{url}: {exc}"
    if role in ("scheduler", "worker") and settings.metrics_port:
        try:
            with socket.create_connection(("127.0.0.1", settings.metrics_port), timeout=TIMEOUT_SECONDS):
                return ""
        except OSError as exc:
            return f"metrics port {settings.metrics_port}: {exc}"
    return ""


if __name__ == "__main__":
    problem = check()
    print(problem or "ok")
    sys.exit(1 if problem else 0)
