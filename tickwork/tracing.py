"""OpenTelemetry traces of fires and attempts (optional: ``pip install 'tickwork[otel]'``).

One trace shows a run from its schedule to its result:

* ``tickwork.fire`` (scheduler): starts at the fire's ``scheduled_for``, event ``committed``
  when the fire's transaction has committed, ends when its message is durable on the broker
  (event ``published``; an error status if the publish failed and the outbox sweep will retry);
* ``tickwork.attempt`` (worker): a child of the fire, through the W3C ``traceparent`` carried in
  the message (``options["tickwork_trace"]``); events ``claimed``, ``executed``, ``finished``;
  attributes job, run, attempt, worker, status. A retry's message is built while its failed
  attempt's span is current, so retries join the same trace.

Without opentelemetry installed every function here does nothing. With it installed but no
SDK ``TracerProvider`` set (by :func:`configure` or by the application, e.g.
``opentelemetry-instrument``), :func:`active` is False and tickwork makes no spans at all:
the worker's hot path costs one check.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from tickwork.errors import ConfigError

log = logging.getLogger(__name__)

#: ``message.options`` key of the trace context (a W3C ``traceparent`` carrier).
OPTION = "tickwork_trace"
TRACER_NAME = "tickwork"

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import ProxyTracerProvider, Status, StatusCode

    AVAILABLE = True
except ImportError:  # the optional extra is not installed
    AVAILABLE = False


class _AttemptState(threading.local):
    """This thread's attempt span. A class default, not ``getattr(local, name, None)``: with
    tracing off the attribute is never set, and a missing attribute of a ``threading.local``
    raises inside ``getattr`` (1.5 µs, five times per attempt: 1.4 % of a worker's GIL samples
    in a drain, benchmarks/results/worker_profile.txt, section 12)."""

    attempt: tuple[Any, Any] | None = None


_local = _AttemptState()
_configured = False
#: A provider used instead of the global one (:func:`use_provider`).
_provider: Any = None


#: A global SDK provider has been seen (OpenTelemetry sets the global provider once for good).
_global_set = False
#: When the global provider was last looked up while unset (monotonic seconds).
_looked_at = float("-inf")
#: How long "no global provider" is believed: the lookup reads ``os.environ`` on every call,
#: 1-2 % of a worker's CPU when it was made for each attempt.
LOOKUP_INTERVAL = 1.0


def active() -> bool:
    """True when spans would be recorded: opentelemetry is installed and an SDK provider is set.

    A global provider set by the application is noticed within :data:`LOOKUP_INTERVAL`; one set
    by :func:`configure` or :func:`use_provider` at once."""
    global _global_set, _looked_at
    if not AVAILABLE:
        return False
    if _provider is not None or _global_set:
        return True
    now = time.monotonic()
    if now - _looked_at < LOOKUP_INTERVAL:
        return False
    _looked_at = now
    _global_set = not isinstance(trace.get_tracer_provider(), ProxyTracerProvider)
    return _global_set


def use_provider(provider: Any) -> None:
    """Record tickwork's spans with ``provider`` instead of the global one (None: the global
    one again). OpenTelemetry lets the global provider be set once per process; an application
    embedding tickwork, or a test, may want its own."""
    global _provider
    _provider = provider


def configure(exporter: str, service_name: str) -> None:
    """Install an SDK ``TracerProvider`` exporting to ``exporter`` (``otlp`` or ``console``;
    empty: nothing), unless the application has set one already (it is then left alone).

    ``otlp`` needs ``opentelemetry-exporter-otlp-proto-http`` and reads the standard
    ``OTEL_EXPORTER_OTLP_*`` variables (endpoint, headers). Called once per process by the
    scheduler, the worker (in each worker process) and the API.
    """
    global _configured, _looked_at
    _looked_at = float("-inf")  # look the global provider up now, not from the last second
    if not exporter or _configured or active():
        return
    if not AVAILABLE:
        raise ConfigError("TICKWORK_TRACES_EXPORTER", "needs the otel extra: pip install 'tickwork[otel]'")
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    span_exporter: SpanExporter
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError(
                "TICKWORK_TRACES_EXPORTER",
                "otlp needs the OTLP exporter: pip install opentelemetry-exporter-otlp-proto-http",
            ) from None
        span_exporter = OTLPSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    _configured = True
    _looked_at = float("-inf")


def _tracer() -> Any:
    if _provider is not None:
        return _provider.get_tracer(TRACER_NAME)
    return trace.get_tracer(TRACER_NAME)


def _ns(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000_000)


# -- the scheduler: one span per fire ---------------------------------------------------------------


def start_fire(
    *, job_id: int, job_name: str, run_id: int, scheduled_for: datetime, attempt: int, trigger: str
) -> Any:
    """A ``tickwork.fire`` span that began at ``scheduled_for``, with its ``committed`` event now;
    None when tracing is off."""
    if not active():
        return None
    span = _tracer().start_span(
        "tickwork.fire",
        start_time=min(_ns(scheduled_for), trace_now()),
        attributes={
            "tickwork.job.id": job_id,
            "tickwork.job.name": job_name,
            "tickwork.run.id": run_id,
            "tickwork.run.attempt": attempt,
            "tickwork.run.trigger": trigger,
            "tickwork.scheduled_for": scheduled_for.isoformat(),
        },
    )
    span.add_event("committed")
    return span


def trace_now() -> int:
    return time.time_ns()


@contextmanager
def current(span: Any) -> Iterator[None]:
    """Make ``span`` the current span (so a message built inside carries it); no-op for None."""
    if span is None:
        yield
        return
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        otel_context.detach(token)


def end_fire(span: Any, *, published: bool) -> None:
    if span is None:
        return
    if published:
        span.add_event("published")
    else:
        span.set_status(Status(StatusCode.ERROR, "publish failed; the outbox sweep republishes"))
    span.end()


# -- messages ------------------------------------------------------------------------------------------


def inject(options: dict[str, Any]) -> None:
    """Put the current trace context into a message's options (nothing when tracing is off)."""
    if not active():
        return
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if carrier:
        options[OPTION] = carrier


# -- the worker: one span per attempt -------------------------------------------------------------------


def begin_attempt(message: Any, options: Any) -> None:
    """Start this thread's ``tickwork.attempt`` span, a child of the message's fire (or retry)."""
    if not active():
        return
    carrier = message.options.get(OPTION) or {}
    parent = propagate.extract(carrier) if carrier else None
    span = _tracer().start_span(
        "tickwork.attempt",
        context=parent,
        attributes={
            "tickwork.job.id": options["job_id"],
            "tickwork.job.name": options["job_name"],
            "tickwork.run.id": options["run_id"],
            "tickwork.run.attempt": options["attempt"],
            "messaging.message.id": message.message_id,
        },
    )
    token = otel_context.attach(trace.set_span_in_context(span))
    _local.attempt = (span, token)


def attempt_event(name: str, **attributes: Any) -> None:
    state = _local.attempt
    if state is not None:
        state[0].add_event(name, attributes={k: v for k, v in attributes.items() if v is not None})


def end_attempt(*, status: str, error: str | None = None, worker_id: str | None = None) -> None:
    """End this thread's attempt span (``status``: SUCCESS, FAILED, skipped, ...)."""
    state = _local.attempt
    if state is None:
        return
    _local.attempt = None
    span, token = state
    span.set_attribute("tickwork.run.status", status)
    if worker_id:
        span.set_attribute("tickwork.worker.id", worker_id)
    if error:
        span.set_status(Status(StatusCode.ERROR, error[:500]))
    try:
        otel_context.detach(token)
    except Exception:  # detached in another context (should not happen): never fail an attempt
        log.debug("Detaching the attempt's trace context failed.", exc_info=True)
    span.end()
