"""Prometheus metrics of API, scheduler and worker processes.

Process-owned metrics (runs, durations, lag, retries, leader flag, lease renewals) live in one
:class:`TickworkMetrics` object; cluster-wide gauges (DLQ size, queue depth, live workers, the
current leader) are computed when scraped by :class:`ClusterCollector`, from MySQL, RabbitMQ and
Redis, so every process reports the same numbers and nothing has to keep them up to date.

Multi-process: prometheus-client reads ``PROMETHEUS_MULTIPROC_DIR`` (its own variable, not a
tickwork setting) when it is first imported. When it is set, every process writes its values to
files in that folder and :func:`start_metrics_server` / :func:`render_latest` aggregate them, so
Dramatiq's forked worker processes show up as one target. The folder must be emptied before the
processes start (``scripts/cluster.sh`` and the container entrypoint do).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

#: Seconds; attempts range from milliseconds (a python function) to hours (a slow HTTP call).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: Seconds from ``scheduled_for`` to the attempt's start.
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)
#: A scrape re-reads MySQL/Redis/RabbitMQ at most this often (Prometheus scrapes every 15 s).
DEFAULT_CLUSTER_CACHE_SECONDS = 5.0


def multiprocess_dir() -> str | None:
    """The folder prometheus-client aggregates across processes, or None (single process)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class TickworkMetrics:
    """The metrics a tickwork process records, registered on ``registry``.

    Parameters:
      registry: where to register (the process default; tests pass their own).
    """

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.runs = Counter(
            "tickwork_runs",
            "Finished attempts by job and final status (SUCCESS, FAILED, DEAD).",
            ["job_name", "status"],
            registry=registry,
        )
        self.attempt_duration = Histogram(
            "tickwork_attempt_duration_seconds",
            "Time a worker spent on one attempt.",
            ["queue", "status"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.scheduling_lag = Histogram(
            "tickwork_scheduling_lag_seconds",
            "From a fire's scheduled time to the start of its first attempt, by why the attempt "
            "exists: trigger=schedule is the on-time fires' lag; misfire (catch-up), manual and "
            "replay fires start late by design and have their own series.",
            ["queue", "trigger"],
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "tickwork_retries",
            "Failed attempts that will be retried under the job's policy.",
            ["job_name"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "tickwork_dead_letters",
            "Runs whose retries were spent and that went to the dead-letter queue.",
            ["job_name"],
            registry=registry,
        )
        self.skipped_messages = Counter(
            "tickwork_skipped_messages",
            "Messages a worker skipped (the attempt was claimed elsewhere: a redelivery).",
            ["queue"],
            registry=registry,
        )
        self.in_progress = Gauge(
            "tickwork_attempts_in_progress",
            "Attempts running now in this process.",
            ["queue"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.fires = Counter(
            "tickwork_fires",
            "Fires written by the scheduler, by outcome (fired, missed, skipped, manual).",
            ["outcome"],
            registry=registry,
        )
        self.is_leader = Gauge(
            "tickwork_scheduler_is_leader",
            "1 while this scheduler node holds the lease.",
            ["node_id"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.lease_renewals = Counter(
            "tickwork_lease_renewals",
            "Lease acquisitions and renewals by result (acquired, renewed, lost, failed).",
            ["node_id", "result"],
            registry=registry,
        )

    def record_fires(self, rows: Mapping[str, int]) -> None:
        """Count the rows one fire transaction wrote, keyed by run status.

        A PENDING row is a fire made (the outbox row of attempt 1): its outcome is ``fired``;
        MISSED and SKIPPED rows are fires not made, counted as ``missed`` and ``skipped``.
        """
        for status, count in rows.items():
            outcome = "fired" if status == "PENDING" else status.lower()
            self.fires.labels(outcome).inc(count)

    def record_lease(self, node_id: str, result: str, *, leader: bool) -> None:
        """One lease attempt of a scheduler node and whether it leads afterwards."""
        self.lease_renewals.labels(node_id, result).inc()
        self.is_leader.labels(node_id).set(1 if leader else 0)


_default: TickworkMetrics | None = None
_default_lock = threading.Lock()


def get_metrics() -> TickworkMetrics:
    """The process-wide metrics on the default registry (created once)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = TickworkMetrics()
        return _default


def exposition_registry(extra: Iterable[Collector] = ()) -> CollectorRegistry:
    """The registry to expose: all processes' files when multi-process, else this process's."""
    directory = multiprocess_dir()
    if directory is None:
        if not extra:
            return REGISTRY
        registry = CollectorRegistry()
        registry.register(_Delegate(REGISTRY))
    else:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    for collector in extra:
        registry.register(collector)
    return registry


def render_latest(extra: Iterable[Collector] = ()) -> tuple[bytes, str]:
    """The text exposition (body, content type) for an HTTP ``/metrics`` handler."""
    return generate_latest(exposition_registry(extra)), CONTENT_TYPE_LATEST


def start_metrics_server(port: int, *, addr: str = "0.0.0.0", extra: Iterable[Collector] = ()) -> int:
    """Serve ``/metrics`` on ``port`` from a daemon thread; returns the bound port (0 picks one).

    Workers and schedulers call this at start when ``TICKWORK_METRICS_PORT`` is set; a Dramatiq
    worker calls it once in the parent process, with ``PROMETHEUS_MULTIPROC_DIR`` set, so the
    forked worker processes are aggregated.
    """
    server, _thread = start_http_server(port, addr=addr, registry=exposition_registry(extra))
    bound = int(server.server_address[1])
    logger.info("metrics on http://%s:%d/metrics", addr, bound)
    return bound


def mark_process_dead(pid: int | None = None) -> None:
    """Drop a stopped process's live gauges (call from a worker process's shutdown hook)."""
    directory = multiprocess_dir()
    if directory is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid(), directory)  # type: ignore[no-untyped-call]


class _Delegate(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


class ClusterCollector(Collector):
    """Cluster gauges computed at scrape time, cached for ``cache_seconds``.

    Parameters:
      dlq_size: returns the number of DEAD runs (an index range count on ``status``).
      pending_runs: returns the number of PENDING runs (published or not yet claimed).
      queue_depths: returns ``{queue: messages ready}`` from the broker.
      cluster_state: returns the Redis view (see :func:`read_cluster_state`).
      job_health: returns ``[(job_name, last success as epoch seconds or None, health)]``.
      notification_counts: returns ``{(event, status): notifications}`` from the outbox.
      cache_seconds: minimum time between two reads of the services.
    Each source may be None (not available in this mode); a failing source is logged and its
    gauges are left out of that scrape rather than failing the whole scrape.
    """

    def __init__(
        self,
        *,
        dlq_size: Callable[[], int] | None = None,
        pending_runs: Callable[[], int] | None = None,
        queue_depths: Callable[[], dict[str, int]] | None = None,
        cluster_state: Callable[[], dict[str, Any]] | None = None,
        job_health: Callable[[], list[tuple[str, float | None, str]]] | None = None,
        notification_counts: Callable[[], dict[tuple[str, str], int]] | None = None,
        cache_seconds: float = DEFAULT_CLUSTER_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job_health = job_health
        self.notification_counts = notification_counts
        self.dlq_size = dlq_size
        self.pending_runs = pending_runs
        self.queue_depths = queue_depths
        self.cluster_state = cluster_state
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._cached_at: float | None = None

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            now = self.clock()
            if self._cached_at is None or now - self._cached_at >= self.cache_seconds:
                self._cached = list(self._read())
                self._cached_at = now
            return list(self._cached)

    def _read(self) -> Iterator[Metric]:
        if self.dlq_size is not None and (value := _safe("dlq_size", self.dlq_size)) is not None:
            yield GaugeMetricFamily("tickwork_dlq_size", "Runs in the dead-letter queue.", value=value)
        if self.pending_runs is not None and (value := _safe("pending_runs", self.pending_runs)) is not None:
            yield GaugeMetricFamily(
                "tickwork_pending_runs", "Attempts written but not yet claimed by a worker.", value=value
            )
        if self.queue_depths is not None and (depths := _safe("queue_depths", self.queue_depths)) is not None:
            family = GaugeMetricFamily(
                "tickwork_queue_depth", "Messages ready in each broker queue.", labels=["queue"]
            )
            for queue, depth in sorted(depths.items()):
                family.add_metric([queue], depth)
            yield family
        if (
            self.cluster_state is not None
            and (state := _safe("cluster_state", self.cluster_state)) is not None
        ):
            yield GaugeMetricFamily(
                "tickwork_live_workers",
                "Worker processes with a live heartbeat.",
                value=len(state["workers"]),
            )
            yield GaugeMetricFamily(
                "tickwork_live_schedulers",
                "Scheduler nodes with a live presence key.",
                value=len(state["schedulers"]),
            )
            leader = GaugeMetricFamily(
                "tickwork_leader", "1 for the scheduler node holding the lease.", labels=["node_id"]
            )
            if state.get("leader"):
                leader.add_metric([state["leader"]["node_id"]], 1)
            yield leader
        yield from self._read_alerts()

    def _read_alerts(self) -> Iterator[Metric]:
        """Issue 13: per-job health and the notifications outbox."""
        if self.job_health is not None and (jobs := _safe("job_health", self.job_health)) is not None:
            success = GaugeMetricFamily(
                "tickwork_job_last_success_timestamp_seconds",
                "When the job last finished an attempt with SUCCESS (absent: never).",
                labels=["job_name"],
            )
            late = GaugeMetricFamily(
                "tickwork_job_late",
                "1 while a fire of the job was reported late and none has succeeded on time since.",
                labels=["job_name"],
            )
            failing = GaugeMetricFamily(
                "tickwork_job_failing",
                "1 while the job's last finished run (SUCCESS or DEAD) is DEAD.",
                labels=["job_name"],
            )
            for name, last_success, health in jobs:
                if last_success is not None:
                    success.add_metric([name], last_success)
                late.add_metric([name], 1 if health == "late" else 0)
                failing.add_metric([name], 1 if health == "failing" else 0)
            yield success
            yield late
            yield failing
        if (
            self.notification_counts is not None
            and (counts := _safe("notification_counts", self.notification_counts)) is not None
        ):
            family = CounterMetricFamily(
                "tickwork_notifications",
                "Webhook notifications recorded, by event and by delivery status (PENDING, DELIVERED, "
                "FAILED): a notification moves from PENDING to one of the others.",
                labels=["event", "status"],
            )
            for (event, status), count in sorted(counts.items()):
                family.add_metric([event, status], count)
            yield family


def _safe(name: str, source: Callable[[], Any]) -> Any:
    try:
        return source()
    except Exception:
        logger.warning("metrics source %s failed", name, exc_info=True)
        return None


def read_cluster_state(client: Any, namespace: str, *, now: float | None = None) -> dict[str, Any]:
    """The leader, scheduler nodes and worker heartbeats from Redis (keys in :mod:`tickwork.keys`).

    Returns ``{"leader": {"node_id", "ttl_ms"} | None, "schedulers": [...], "workers": [...]}``;
    each node and worker is its stored JSON plus ``ttl_seconds`` (time left on its key).
    ``client`` is a ``redis.Redis`` with ``decode_responses=False`` or True.
    """
    from tickwork import keys

    leader: dict[str, Any] | None = None
    raw = client.get(keys.leader_key(namespace))
    if raw is not None:
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        leader = {"node_id": text.split(" ", 1)[0], "ttl_ms": int(client.pttl(keys.leader_key(namespace)))}

    def scan(pattern: str) -> list[dict[str, Any]]:
        names = sorted(client.scan_iter(pattern, count=500))
        if not names:
            return []
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.get(name)
            pipe.pttl(name)
        replies = pipe.execute()
        items: list[dict[str, Any]] = []
        for index, name in enumerate(names):
            value, ttl = replies[2 * index], replies[2 * index + 1]
            if value is None:
                continue  # expired between SCAN and GET
            key = name.decode() if isinstance(name, bytes) else str(name)
            try:
                data = json.loads(value)
                if not isinstance(data, dict):
                    data = {"value": data}
            except ValueError:
                data = {"value": value.decode() if isinstance(value, bytes) else str(value)}
            data.setdefault("key", key)
            data["ttl_seconds"] = round(ttl / 1000, 3) if ttl and ttl > 0 else None
            items.append(data)
        return items

    workers = scan(keys.worker_heartbeat_pattern(namespace))
    schedulers = scan(keys.scheduler_node_pattern(namespace))
    # ``<ns>:worker:*`` must not pick up other key families that might share the prefix.
    workers = [w for w in workers if ":scheduler:" not in str(w.get("key"))]
    return {"leader": leader, "schedulers": schedulers, "workers": workers}


#: Job queue names are re-read from ``jobs`` at most this often for the queue-depth gauge.
QUEUE_NAMES_CACHE_SECONDS = 60.0


def cluster_collector(
    settings: Any, engine: Any, *, cache_seconds: float = DEFAULT_CLUSTER_CACHE_SECONDS
) -> ClusterCollector:
    """A :class:`ClusterCollector` reading this deployment's MySQL, Redis and RabbitMQ.

    Register it where ``/metrics`` is served (one process is enough, the API is the natural one):
    ``REGISTRY.register(cluster_collector(settings, engine))`` or
    ``start_metrics_server(port, extra=[cluster_collector(settings, engine)])``.
    """
    from tickwork.store import stats

    state: Callable[[], dict[str, Any]] | None = None
    if settings.redis_url:
        import redis

        client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)

        def state() -> dict[str, Any]:
            return read_cluster_state(client, settings.namespace)

    depths: Callable[[], dict[str, int]] | None = None
    if not settings.embedded_broker:
        depths = RabbitQueueDepths(settings, engine)
    from tickwork.store.alerts import health_of, notification_counts

    def job_health() -> list[tuple[str, float | None, str]]:
        return [
            (h.name, h.last_success_at.timestamp() if h.last_success_at else None, h.health)
            for h in health_of(engine).values()
        ]

    return ClusterCollector(
        job_health=job_health,
        notification_counts=lambda: notification_counts(engine),
        dlq_size=lambda: stats.dead_count(engine),
        pending_runs=lambda: stats.pending_count(engine),
        queue_depths=depths,
        cluster_state=state,
        cache_seconds=cache_seconds,
    )


class RabbitQueueDepths:
    """Messages ready per queue, by passive ``queue.declare`` (no management plugin needed).

    Covers each job queue named in ``jobs`` (``<namespace>.<queue>``), its delay queue
    (``.DQ``: retries waiting out their backoff) and the dead-letter queue.
    """

    def __init__(self, settings: Any, engine: Any, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock
        self._names: list[str] = []
        self._names_at: float | None = None

    def queue_names(self) -> list[str]:
        from tickwork.messaging import dlq_name, queue_name
        from tickwork.store.jobs import stored_queues

        now = self.clock()
        if self._names_at is None or now - self._names_at >= QUEUE_NAMES_CACHE_SECONDS:
            queues = sorted(stored_queues(self.engine) | {"default"})
            names = []
            for queue in queues:
                names += [queue_name(self.settings, queue), queue_name(self.settings, queue) + ".DQ"]
            self._names = [*names, dlq_name(self.settings)]
            self._names_at = now
        return self._names

    def __call__(self) -> dict[str, int]:
        import pika
        import pika.exceptions

        params = pika.URLParameters(self.settings.broker_url)
        params.socket_timeout = 2
        params.blocked_connection_timeout = 2
        connection = pika.BlockingConnection(params)
        try:
            channel = connection.channel()
            depths: dict[str, int] = {}
            for name in self.queue_names():
                try:
                    reply = channel.queue_declare(queue=name, passive=True)
                    depths[name] = int(reply.method.message_count)
                except pika.exceptions.ChannelClosedByBroker:  # not declared yet: 404 closes the channel
                    channel = connection.channel()
            return depths
        finally:
            connection.close()
