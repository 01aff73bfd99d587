"""Private MariaDB, Redis and RabbitMQ servers for fault tests, on free loopback ports.

A fault test stops, kills and restarts services. The machine's shared servers (3306, 6379,
5672) are used by other test runs and a running tickwork, so they are never touched: each class
here starts a server of the test's own, in a temporary directory, as a child process, and
:meth:`close` removes it whatever happened. ``stop``/``start``/``kill`` are the faults.
"""

from __future__ import annotations

import getpass
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
#: Starting a server on a busy 2-core machine can take a while (RabbitMQ ~5-20 s).
START_TIMEOUT = 90.0


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A port no one listens on, below the kernel's ephemeral range.

    A port from ``bind(0)`` comes from the ephemeral range, which outgoing connections also draw
    from: between choosing it and a server binding it (seconds later for a private RabbitMQ, whose
    distribution port is taken after MariaDB and Redis have started) a client socket of the
    running suite can take it, and the server fails with "address in use" (seen in CI:
    RabbitMQ's ``dist_port_already_used``). Below the range only a listener can take it.
    """
    low, _ = _ephemeral_range()
    rng = random.Random()
    for _ in range(200 if low > 21000 else 0):
        port = rng.randrange(20000, low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # no free port found below the range: the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def available() -> str | None:
    """Why private servers cannot run here (a missing program), or None."""
    for program in ("mariadbd", "mariadb-install-db", "redis-server"):
        if shutil.which(program) is None and not Path("/usr/sbin", program).exists():
            return f"{program} is not installed"
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        return "rabbitmq-server is not installed"
    return None


class _Server:
    """A server process of this test's own; subclasses say how to start and probe it."""

    name = "server"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None

    def _ready(self) -> bool:
        return port_open(self.port)

    def start(self) -> None:
        """Start the server (again) on the same port and data, and wait until it answers."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self._log = open(self.root / f"{self.name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self._command(),
            env=self._env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._started, START_TIMEOUT, f"private {self.name} on port {self.port}")

    def _started(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"private {self.name} exited: {self.log_tail()}")
        return self._ready()

    def stop(self, timeout: float = 60) -> None:
        """A clean shutdown (SIGTERM), waiting until the port is closed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._after_exit()

    def kill(self) -> None:
        """SIGKILL: the server dies without a clean shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self._after_exit()

    def _after_exit(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        wait_until(lambda: not port_open(self.port), 30, f"port {self.port} to close")

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.running and self.proc is not None else []

    def log_tail(self, chars: int = 2000) -> str:
        path = self.root / f"{self.name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def close(self) -> None:
        """Kill the server and remove its files."""
        with suppress(Exception):
            self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateMariaDB(_Server):
    """``mariadbd`` on its own datadir (``mariadb-install-db``); root without a password."""

    name = "mariadb"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.datadir = root / "data"
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root" if os.getuid() == 0 else f"--user={getpass.getuser()}",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            timeout=180,
        )

    @property
    def server_url(self) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        cmd = [
            "/usr/sbin/mariadbd",
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.root / 'mysqld.sock'}",
            f"--pid-file={self.root / 'mysqld.pid'}",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=64M",
            "--innodb-log-file-size=48M",
            "--max-connections=500",
            "--character-set-server=utf8mb4",
        ]
        if os.getuid() == 0:
            cmd.append("--user=root")
        return cmd

    def _ready(self) -> bool:
        import pymysql

        try:
            conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=2)
        except pymysql.err.MySQLError:
            return False
        conn.close()
        return True

    def create_database(self, name: str) -> str:
        """Create and migrate a database; its SQLAlchemy URL."""
        import pymysql

        from tickwork.store.engine import upgrade

        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", autocommit=True)
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        conn.close()
        url = f"{self.server_url}/{name}"
        upgrade(url)
        return url


class PrivateRedis(_Server):
    """``redis-server`` without persistence: a restart loses every key (leases, heartbeats)."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        return [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.root),
            "--daemonize",
            "no",
        ]

    def _ready(self) -> bool:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def pause(self, seconds: float) -> None:
        """``CLIENT PAUSE``: every client's commands wait ``seconds`` (the server stays up)."""
        import redis

        client = redis.Redis(port=self.port, socket_timeout=5)
        try:
            client.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")
        finally:
            client.close()


class PrivateRabbitMQ(_Server):
    """A RabbitMQ node of its own (node name, AMQP and distribution ports, mnesia directory).

    No plugins (so no management listener on the shared 15672), guest/guest allowed on loopback.
    ``stop_app``/``start_app`` take the broker away while the Erlang VM stays up: the fault a
    user sees as "RabbitMQ went away" (connections closed, ports refused).
    """

    name = "rabbitmq"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.node = f"twtest{uuid.uuid4().hex[:8]}@localhost"
        self.dist_port = free_port()
        (root / "enabled_plugins").write_text("[].\n")
        (root / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            "loopback_users = none\n"
            "vm_memory_high_watermark.absolute = 256MB\n"
            "disk_free_limit.absolute = 50MB\n"
        )
        (root / "rabbitmq-env.conf").write_text("")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
                "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
                "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.root / "log"),
                "RABBITMQ_PID_FILE": str(self.root / "rabbit.pid"),
                "RABBITMQ_ENABLED_PLUGINS": "",
                "ERL_EPMD_ADDRESS": "127.0.0.1",
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            }
        )
        env.pop("ERL_FLAGS", None)
        return env

    def _command(self) -> list[str]:
        return [str(RABBITMQ_BIN / "rabbitmq-server")]

    def _ready(self) -> bool:
        import pika

        try:
            conn = pika.BlockingConnection(
                pika.URLParameters(self.url + "?connection_attempts=1&socket_timeout=2")
            )
        except pika.exceptions.AMQPError:
            return False
        conn.close()
        return True

    def ctl(self, *args: str, timeout: float = 120) -> None:
        subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, *args],
            env=self._env(),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )

    app_stopped = False

    def stop_app(self) -> None:
        """The broker goes away (connections closed), the node's VM stays up."""
        self.app_stopped = True
        self.ctl("stop_app")
        wait_until(lambda: not port_open(self.port), 30, f"AMQP port {self.port} to close")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.app_stopped = False
        wait_until(self._ready, START_TIMEOUT, f"private RabbitMQ on port {self.port}")

    def ensure_running(self) -> None:
        """Whatever a test did: the node is up and its broker application started."""
        self.start()
        if self.app_stopped or not self._ready():
            self.start_app()

    def stop(self, timeout: float = 60) -> None:
        self.app_stopped = False
        if self.running:
            with suppress(subprocess.SubprocessError):
                self.ctl("stop", timeout=timeout)
        super().stop(timeout)

    def pids(self) -> list[int]:
        """The Erlang VM's process group (the script, beam.smp, its port programs)."""
        if not self.running or self.proc is None:
            return []
        out = subprocess.run(
            ["pgrep", "-g", str(self.proc.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]
