"""A private Docker engine for the container tests, and the tickwork image built in it.

The engine is Debian's ``dockerd`` with everything of its own under one temporary directory
(``--data-root``, ``--exec-root``, its unix socket) and no network set-up
(``--iptables=false --bridge=none``): containers run with ``--network host``, so nothing of the
machine's Docker, firewall or bridges is touched, and :meth:`DockerEngine.stop` removes it all.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE_SECONDS = 120.0
#: Cold: debootstrap (about 1 to 2 minutes) plus the image; warm: the image only.
BUILD_DEADLINE_SECONDS = 900.0
IMAGE = "tickwork:dev"
BASE_IMAGE = "tickwork-base:bookworm"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


#: dockerd and debootstrap live in sbin, which a non-login root shell may lack on its PATH.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def which(tool: str) -> str | None:
    return shutil.which(tool, path=SEARCH_PATH)


class EngineUnavailable(Exception):
    """The container tests cannot run here; the message says what is missing."""


def missing_tools() -> list[str]:
    """What this machine lacks to run a private engine and build the image (empty: nothing)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (dockerd, debootstrap and chroot need it)")
    for tool, package in (
        ("dockerd", "docker.io"),
        ("docker", "docker.io"),
        ("docker-compose", "docker-compose"),
        ("debootstrap", "debootstrap"),
    ):
        if which(tool) is None:
            missing.append(f"{tool} (Debian package {package})")
    return missing


def buildkit_client() -> tuple[str, dict[str, str]]:
    """A docker client that builds with BuildKit: one with buildx, else Debian's own client.

    The Dockerfile bind-mounts the build stage's wheels and takes pip's CA bundle as a build
    secret, both BuildKit features. A newer client without its buildx plugin falls back to the
    legacy builder, which has neither; Debian's 20.10 client has BuildKit built in.
    """
    on_path = which("docker") or "docker"
    probe = subprocess.run([on_path, "buildx", "version"], capture_output=True, check=False)
    if probe.returncode == 0:
        return on_path, {}
    for candidate in ("/usr/bin/docker", on_path):
        if Path(candidate).exists():
            return candidate, {"DOCKER_BUILDKIT": "1"}
    raise EngineUnavailable("no docker client that builds with BuildKit")


@dataclass
class DockerEngine:
    """A running private ``dockerd``; ``env`` points ``docker`` and ``docker-compose`` at it."""

    root: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def log(self) -> str:
        return (self.root / "dockerd.log").read_text(errors="replace")

    def docker(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.run(["docker", *args], timeout=timeout, check=check)

    def run(
        self,
        argv: list[str],
        *,
        timeout: float = 120,
        check: bool = True,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv,
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=ROOT,
        )
        if check and result.returncode != 0:
            command = " ".join(argv)
            output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            raise AssertionError(f"{command} exited {result.returncode}\n{output}")
        return result

    def build_image(self) -> dict[str, float]:
        """The local base image (scripts/docker-base.sh) and tickwork's image on it; timings in s."""
        client, client_env = buildkit_client()
        started = time.monotonic()
        self.run(
            ["bash", "scripts/docker-base.sh", BASE_IMAGE],
            timeout=BUILD_DEADLINE_SECONDS,
            extra_env={"DOCKER": client},
        )
        based = time.monotonic()
        secret = ["--secret", f"id=pip_cert,src={CA_BUNDLE}"] if CA_BUNDLE.exists() else []
        self.run(
            [
                client,
                "build",
                "--network",
                "host",
                *secret,
                "--build-arg",
                f"BASE_IMAGE={BASE_IMAGE}",
                "-f",
                "docker/Dockerfile",
                "-t",
                IMAGE,
                ".",
            ],
            timeout=BUILD_DEADLINE_SECONDS,
            extra_env=client_env,
        )
        built = time.monotonic()
        size = int(self.docker("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())
        self.timings = {
            "base_seconds": round(based - started, 1),
            "image_seconds": round(built - based, 1),
            "image_mb": round(size / 1e6, 1),
        }
        return self.timings

    def stop(self) -> None:
        """Remove every container, stop the daemon, unmount and delete its directories."""
        with contextlib.suppress(Exception):
            ids = self.docker("ps", "-aq", timeout=30, check=False).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, timeout=120, check=False)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        for mount in reversed(_mounts_under(self.root)):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        if self.root.exists():
            raise AssertionError(f"the private engine's directory {self.root} could not be removed")


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    points = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4]
            if point.startswith(prefix):
                points.append(point)
    return points


def start_engine() -> DockerEngine:
    """Start a private dockerd and wait until it answers; raises :class:`EngineUnavailable`."""
    missing = missing_tools()
    if missing:
        raise EngineUnavailable(
            "cannot run a private Docker engine, missing: "
            + "; ".join(missing)
            + " (scripts/test.sh installs the packages with apt)"
        )
    root = Path(tempfile.mkdtemp(prefix="tw-dockerd-"))
    socket = root / "docker.sock"
    argv = [
        which("dockerd") or "dockerd",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        "--data-root",
        str(root / "data"),
        "--exec-root",
        str(root / "exec"),
        "--pidfile",
        str(root / "dockerd.pid"),
        "--host",
        f"unix://{socket}",
    ]
    log = open(root / "dockerd.log", "wb")  # noqa: SIM115 - the daemon writes it until stop()
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
    env["DOCKER_HOST"] = f"unix://{socket}"
    env["PATH"] = SEARCH_PATH
    engine = DockerEngine(root=root, process=process, env=env)
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    while True:
        if process.poll() is not None:
            tail = engine.log[-3000:]
            engine.stop()
            raise EngineUnavailable(f"dockerd exited {process.returncode} at start:\n{tail}")
        if (
            engine.docker("version", "--format", "{{.Server.Version}}", timeout=30, check=False).returncode
            == 0
        ):
            return engine
        if time.monotonic() > deadline:
            tail = engine.log[-3000:]
            engine.stop()
            raise EngineUnavailable(f"dockerd did not answer within {START_DEADLINE_SECONDS} s:\n{tail}")
        time.sleep(0.5)


def container_health(engine: DockerEngine, container: str) -> str:
    """Docker's health status of a container (starting, healthy, unhealthy), or its state."""
    state = json.loads(engine.docker("inspect", "--format", "{{json .State}}", container).stdout)
    health = state.get("Health")
    return str(health["Status"]) if health else str(state.get("Status"))
