"""docker/: the compose topology, Prometheus' targets and the Grafana dashboard agree with the code.

No Docker engine runs here, so these read the files: every service the issue names is there,
every tickwork process is scraped on the port it serves, and every metric the dashboard queries
is one tickwork exports (a renamed metric would leave a panel silently empty).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tickwork.metrics import ClusterCollector, TickworkMetrics

pytestmark = pytest.mark.unit

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def load(name: str) -> Any:
    return yaml.safe_load((DOCKER / name).read_text())


def test_compose_runs_the_whole_cluster() -> None:
    services = load("compose.yml")["services"]
    assert {"mysql", "redis", "rabbitmq", "api", "prometheus", "grafana"} <= set(services)
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
    )
    exported |= {family.name for family in cluster.collect()}
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        for target in panel.get("targets", []):
            used |= set(re.findall(r"\btickwork_[a-z_]+", target["expr"]))
    assert used, "the dashboard queries no tickwork metric"
    assert used <= exported, sorted(used - exported)
