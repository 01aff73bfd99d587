"""docker/: the compose topology, Prometheus' targets and the Grafana dashboard agree with the code.

These read the files (tests/docker runs the image and compose.host.yml for real): every service
the issue names is there, every tickwork process is scraped on the port it serves, every metric
the dashboard queries is one tickwork exports (a renamed metric would leave a panel silently
empty), Compose itself accepts both compose files, and the image runs as a non-root user with a
health check and no secret.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.conftest import IN_CI
from tickwork.metrics import ClusterCollector, TickworkMetrics

pytestmark = pytest.mark.unit

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def load(name: str) -> Any:
    return yaml.safe_load((DOCKER / name).read_text())


def test_compose_runs_the_whole_cluster() -> None:
    services = load("compose.yml")["services"]
    assert {"mysql", "redis", "rabbitmq", "api", "prometheus", "alertmanager", "grafana"} <= set(services)
    assert services["mysql"]["image"].startswith("mysql:8")
    assert "management" in services["rabbitmq"]["image"]
    commands = {name: svc.get("command", []) for name, svc in services.items()}
    schedulers = [n for n, c in commands.items() if c[:1] == ["scheduler"]]
    workers = [n for n, c in commands.items() if c[:1] == ["worker"]]
    assert len(schedulers) == 2 and len(workers) == 2
    for name in ["api", *schedulers, *workers]:
        env = services[name]["environment"]
        assert env["TICKWORK_DATABASE_URL"].startswith("mysql+pymysql://")
        assert env["TICKWORK_BROKER_URL"].startswith("amqp://")
        assert env["TICKWORK_REDIS_URL"].startswith("redis://")
        assert "migrate" in services[name]["depends_on"]
    assert commands["migrate"] == ["db", "upgrade"]


def test_prometheus_scrapes_every_tickwork_process_where_it_serves() -> None:
    services = load("compose.yml")["services"]
    targets = {
        target
        for job in load("prometheus.yml")["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    for name, svc in services.items():
        command = svc.get("command", [])
        if command[:1] in (["scheduler"], ["worker"]):
            assert f"{name}:{svc['environment']['TICKWORK_METRICS_PORT']}" in targets, name
        if command[:1] == ["api"]:
            assert f"{name}:{command[command.index('--port') + 1]}" in targets


def test_grafana_uses_the_provisioned_datasource_and_real_metric_names() -> None:
    datasource = load("grafana/provisioning/datasources/prometheus.yml")["datasources"][0]
    dashboard = json.loads((DOCKER / "grafana/dashboards/tickwork.json").read_text())
    registry = CollectorRegistry()
    TickworkMetrics(registry)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    exported = {
        family.name + suffix for family in registry.collect() for suffix in suffixes.get(family.type, ("",))
    }
    cluster = ClusterCollector(
        dlq_size=lambda: 0,
        pending_runs=lambda: 0,
        queue_depths=lambda: {"q": 0},
        cluster_state=lambda: {"leader": None, "schedulers": [], "workers": []},
        job_health=lambda: [("job", 1.0, "late")],
        notification_counts=lambda: {("job.late", "PENDING"): 1},
    )
    exported |= {family.name + ("_total" if family.type == "counter" else "") for family in cluster.collect()}
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        for target in panel.get("targets", []):
            used |= set(re.findall(r"\btickwork_[a-z_]+", target["expr"]))
    assert used, "the dashboard queries no tickwork metric"
    assert used <= exported, sorted(used - exported)


def test_prometheus_loads_the_alert_rules_and_sends_to_alertmanager() -> None:
    services = load("compose.yml")["services"]
    config = load("prometheus.yml")
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in services["prometheus"]["volumes"] if ":" in volume)
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert mounts["./prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    assert (DOCKER / "prometheus" / "alerts.yml").is_file()
    targets = [
        t for am in config["alerting"]["alertmanagers"] for g in am["static_configs"] for t in g["targets"]
    ]
    assert targets == ["alertmanager:9093"]
    assert "9093:9093" in services["alertmanager"]["ports"]
    alertmanager_mounts = dict(v.rsplit(":", 2)[:2] for v in services["alertmanager"]["volumes"])
    config_path = alertmanager_mounts["./alertmanager/alertmanager.yml"]
    assert f"--config.file={config_path}" in services["alertmanager"]["command"]
    routes = yaml.safe_load((DOCKER / "alertmanager" / "alertmanager.yml").read_text())
    names = {receiver["name"] for receiver in routes["receivers"]}
    assert routes["route"]["receiver"] in names


def conf_keys(path: Path) -> dict[str, str]:
    """``key = value`` lines of a RabbitMQ (cuttlefish) config file."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return dict((part.strip() for part in line.split("=", 1)) for line in lines if line)  # type: ignore[misc]


def test_compose_rabbitmq_puts_new_queues_on_storage_version_2() -> None:
    """A key RabbitMQ does not know stops the broker at boot, so each key of docker/rabbitmq.conf
    is looked up in the schema of the RabbitMQ installed here (compose runs 3.13; this machine's
    3.10 already has the key)."""
    services = load("compose.yml")["services"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in services["rabbitmq"]["volumes"] if v.startswith("./"))
    assert mounts["./rabbitmq.conf"].startswith("/etc/rabbitmq/conf.d/")
    keys = conf_keys(DOCKER / "rabbitmq.conf")
    assert keys == {"classic_queue.default_version": "2"}
    schemas = sorted(
        Path("/usr/lib/rabbitmq/lib").glob("rabbitmq_server-*/plugins/rabbit-*/priv/schema/rabbit.schema")
    )
    if not schemas:
        message = (
            "no RabbitMQ schema under /usr/lib/rabbitmq (Debian's rabbitmq-server) to check the keys against"
        )
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    schema = schemas[-1].read_text()
    for key in keys:
        assert f'{{mapping, "{key}"' in schema, f"{key} is not a setting of {schemas[-1]}"


TICKWORK_SERVICES = {"migrate", "api", "scheduler-1", "scheduler-2", "worker-1", "worker-2"}


def test_host_compose_runs_only_tickwork_on_the_host_network() -> None:
    full = load("compose.yml")["services"]
    services = load("compose.host.yml")["services"]
    assert set(services) == TICKWORK_SERVICES
    for name, svc in services.items():
        assert svc["network_mode"] == "host", name
        assert "ports" not in svc, name
        assert svc["command"][:1] == full[name]["command"][:1], name
        env = svc["environment"]
        assert env["TICKWORK_DATABASE_URL"].startswith("${TICKWORK_DATABASE_URL:-mysql+pymysql://")
        assert env["TICKWORK_AUTH_SECRET"].startswith("${TICKWORK_AUTH_SECRET:?"), "the secret is required"
        if name != "migrate":
            assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # On one network namespace every process needs a port of its own.
    ports = [
        services[n]["environment"]["TICKWORK_METRICS_PORT"] for n in TICKWORK_SERVICES - {"migrate", "api"}
    ]
    assert len(set(ports)) == 4


@pytest.mark.parametrize("name", ["compose.yml", "compose.host.yml"])
def test_docker_compose_accepts_the_file(name: str) -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        message = "docker-compose is not installed (scripts/test.sh installs Debian's docker-compose)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWORK_")}
    env["TICKWORK_AUTH_SECRET"] = "compose-config-check-secret-0123456789"
    result = subprocess.run(
        [compose, "-f", str(DOCKER / name), "config", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_an_auth_secret() -> None:
    for name in ("compose.yml", "compose.host.yml"):
        text = (DOCKER / name).read_text()
        assert "${TICKWORK_AUTH_SECRET:?" in text, name


def test_image_is_standard_non_root_with_a_health_check_and_no_secret() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    instructions = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]
    assert "ARG BASE_IMAGE=python:3.11-slim" in instructions
    assert [line for line in instructions if line.startswith("FROM")] == [
        "FROM ${BASE_IMAGE} AS build",
        "FROM ${BASE_IMAGE}",
    ]
    user = next(line for line in instructions if line.startswith("USER "))
    assert user.split()[1].split(":")[0] not in ("0", "root")
    assert any(line.startswith("HEALTHCHECK ") and "tickwork-healthcheck" in line for line in instructions)
    env_lines = " ".join(line for line in instructions if line.startswith(("ENV", "ARG")))
    assert not re.search(r"SECRET|PASSWORD|TOKEN", env_lines, re.IGNORECASE)
    ignored = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    # Every file the image copies from the context is let through the ignore file.
    copies = [
        line.split()[1:-1] for line in instructions if line.startswith("COPY ") and "--from" not in line
    ]
    for source in (s for sources in copies for s in sources):
        assert f"!{source}" in ignored or f"!{source}/" in ignored, source


def _healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tickwork_healthcheck", DOCKER / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_finds_the_role_pid_1_runs() -> None:
    health = _healthcheck()
    argv = [
        "/opt/venv/bin/python",
        "/opt/venv/bin/tickwork",
        "api",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "",
    ]
    assert health.role_and_options(argv) == ("api", ["--host", "0.0.0.0", "--port", "8000", ""])
    assert health.role_and_options(["python", "tickwork", "worker", "-p", "1"])[0] == "worker"
    assert health.role_and_options(["python", "tickwork", "db", "upgrade"]) == (None, [])
