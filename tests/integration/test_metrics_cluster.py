"""Cluster gauges from the real services, and metrics aggregated across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pika
import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine

from tests.conftest import ROOT
from tickwork import keys
from tickwork.config import Settings
from tickwork.messaging import queue_name
from tickwork.metrics import cluster_collector
from tickwork.spec import JobSpec
from tickwork.store import RunStatus, utcnow
from tickwork.store.jobs import create_job
from tickwork.store.runs import insert_run

pytestmark = pytest.mark.integration


def test_cluster_collector_reads_mysql_redis_and_rabbitmq(
    cluster_settings: Settings, mysql_engine: Engine
) -> None:
    spec = JobSpec.model_validate(
        {"name": "gauged", "handlerType": "http", "handlerData": "http://x.test/", "queue": "reports"}
    )
    job = create_job(mysql_engine, spec)
    for status in (RunStatus.DEAD, RunStatus.DEAD, RunStatus.PENDING):
        insert_run(mysql_engine, job_id=job.id, scheduled_for=utcnow(), status=status)
    ns = cluster_settings.namespace
    assert cluster_settings.redis_url
    client = redis.Redis.from_url(cluster_settings.redis_url)
    client.set(keys.leader_key(ns), "node-x tok", px=5000)
    client.set(keys.worker_heartbeat_key(ns, "w-a"), json.dumps({"worker_id": "w-a"}), ex=10)
    client.set(keys.worker_heartbeat_key(ns, "w-b"), json.dumps({"worker_id": "w-b"}), ex=10)
    client.close()
    queue = queue_name(cluster_settings, "reports")
    conn = pika.BlockingConnection(pika.URLParameters(cluster_settings.broker_url))
    channel = conn.channel()
    channel.queue_declare(queue, durable=True)
    for _ in range(3):
        channel.basic_publish("", queue, b"{}")
    conn.close()
    try:
        registry = CollectorRegistry()
        registry.register(cluster_collector(cluster_settings, mysql_engine))
        text = generate_latest(registry).decode()
    finally:
        conn = pika.BlockingConnection(pika.URLParameters(cluster_settings.broker_url))
        conn.channel().queue_delete(queue)
        conn.close()
    assert "tickwork_dlq_size 2.0" in text
    assert "tickwork_pending_runs 1.0" in text
    assert "tickwork_live_workers 2.0" in text
    assert 'tickwork_leader{node_id="node-x"} 1.0' in text
    assert f'tickwork_queue_depth{{queue="{queue}"}} 3.0' in text


CHILD = """
import sys
from tickwork.metrics import get_metrics
m = get_metrics()
m.runs.labels("nightly", "SUCCESS").inc(int(sys.argv[1]))
m.is_leader.labels(sys.argv[2]).set(int(sys.argv[3]))
if sys.argv[4] == "stopped":
    from tickwork.metrics import mark_process_dead
    mark_process_dead()
"""

SERVER = """
import sys, time
from tickwork.metrics import start_metrics_server
print(start_metrics_server(0, addr="127.0.0.1"), flush=True)
time.sleep(30)
"""


def test_metrics_are_summed_across_processes(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for count, node, leader, end in ((2, "a", 1, "running"), (3, "b", 0, "stopped")):
        command = [sys.executable, "-c", CHILD, str(count), node, str(leader), end]
        subprocess.run(command, env=env, check=True, timeout=30)
    server = subprocess.Popen([sys.executable, "-c", SERVER], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert 'tickwork_runs_total{job_name="nightly",status="SUCCESS"} 5.0' in body
    # Counters survive their process; a live gauge goes with mark_process_dead (shutdown hook).
    assert 'tickwork_scheduler_is_leader{node_id="a"} 1.0' in body
    assert 'node_id="b"' not in body
