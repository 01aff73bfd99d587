"""The Celery anchor of ``worker_throughput.py --with-celery``: a no-op task with a run history.

The configuration a Python user would pick for "every run recorded in MySQL": RabbitMQ broker,
SQLAlchemy result backend on MariaDB (``db+mysql+pymysql://``), ``task_track_started`` (a STARTED
row before the task runs, like tickwork's RUNNING), ``acks_late`` (acked after the task, like
Dramatiq), prefork pool (``celery worker -c 2``). Settings come from the environment the
benchmark passes: ``BENCH_CELERY_BROKER``, ``BENCH_CELERY_BACKEND``, ``BENCH_CELERY_QUEUE``.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery(
    "tickwork_bench",
    broker=os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("BENCH_CELERY_BACKEND", "db+mysql+pymysql://root@127.0.0.1:3306/celery_bench"),
)
app.conf.update(
    task_track_started=True,
    task_acks_late=True,
    worker_prefetch_multiplier=4,
    task_default_queue=os.environ.get("BENCH_CELERY_QUEUE", "tickwork_bench_celery"),
    result_extended=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench_celery_noop")  # type: ignore[untyped-decorator,misc]  # Celery ships no types
def noop() -> None:
    return None
