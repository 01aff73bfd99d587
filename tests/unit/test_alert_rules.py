"""docker/prometheus/alerts.yml: valid rules (``promtool check rules``), each alert firing and
staying quiet on series fixtures (``promtool test rules``), and naming only metrics tickwork
exports (a renamed metric would silence an alert without a word).

promtool is Debian's ``prometheus`` package (scripts/test.sh installs it); only the binary is
used, no Prometheus server runs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.conftest import IN_CI
from tickwork.metrics import ClusterCollector, TickworkMetrics

pytestmark = pytest.mark.unit

RULES = Path(__file__).resolve().parents[2] / "docker" / "prometheus"
EXPECTED_ALERTS = {
    "TickworkJobLate",
    "TickworkJobFailing",
    "TickworkNoSchedulerLeader",
    "TickworkDLQGrowing",
    "TickworkSchedulingLagHigh",
    "TickworkWorkerGone",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is not installed (scripts/test.sh installs Debian's prometheus package)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


def rules() -> list[dict[str, str]]:
    document = yaml.safe_load((RULES / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def exported_metrics() -> set[str]:
    """Every series name tickwork's processes serve (with the suffixes Prometheus adds)."""
    registry = CollectorRegistry()
    TickworkMetrics(registry)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    cluster = ClusterCollector(
        dlq_size=lambda: 0,
        pending_runs=lambda: 0,
        queue_depths=lambda: {"q": 0},
        cluster_state=lambda: {"leader": None, "schedulers": [], "workers": []},
        job_health=lambda: [("job", 1.0, "late")],
        notification_counts=lambda: {("job.late", "DELIVERED"): 1},
    )
    families = [*registry.collect(), *cluster.collect()]
    return {f.name + suffix for f in families for suffix in suffixes.get(f.type, ("",))}


def test_the_issue_alerts_are_all_there() -> None:
    assert {rule["alert"] for rule in rules()} == EXPECTED_ALERTS


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout


def test_each_alert_fires_and_stays_quiet_on_its_fixtures() -> None:
    tested = set(re.findall(r"alertname: (\w+)", (RULES / "alerts_test.yml").read_text()))
    assert tested == EXPECTED_ALERTS  # a fixture for every rule
    result = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yml"],
        cwd=RULES,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_name_only_metrics_tickwork_exports() -> None:
    used = {name for rule in rules() for name in re.findall(r"\btickwork_[a-z_]+", rule["expr"])}
    assert {
        "tickwork_job_late",
        "tickwork_job_failing",
        "tickwork_scheduler_is_leader",
        "tickwork_dlq_size",
        "tickwork_scheduling_lag_seconds_bucket",
        "tickwork_live_workers",
    } <= used
    exported = exported_metrics()
    assert used <= exported, sorted(used - exported)
    # The issue's metrics are exported under their contract names.
    assert {
        "tickwork_job_last_success_timestamp_seconds",
        "tickwork_job_late",
        "tickwork_notifications_total",
    } <= exported


def test_the_check_catches_a_metric_the_code_does_not_export() -> None:
    exported = exported_metrics()
    assert "tickwork_job_lateness" not in exported
    assert "tickwork_dead_letters_total" in exported and "tickwork_dead_letters" not in exported
