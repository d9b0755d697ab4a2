"""floodwall's observability: a ``floodwall.check`` span per decision (OpenTelemetry, exported over
OTLP/HTTP when configured; a child of the app's span when the adapter passes its trace context),
structured JSON logs, and the core's metrics, as Prometheus text or in a ``prometheus_client``
registry so that an app's existing ``/metrics`` carries them.

    from floodwall import telemetry
    telemetry.configure_tracing(otlp_endpoint="http://otel-collector:4318/v1/traces", sampling_ratio=0.1)
    telemetry.install_json_logs()            # warnings and errors as JSON lines on stderr
    telemetry.register_metrics()             # into prometheus_client.REGISTRY

Everything here is process-wide. Tracing is off until ``configure_tracing``; keys (user ids, IPs)
are recorded on spans as a hash unless ``record_raw_keys=True``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import _floodwall

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

__all__ = [
    "configure_tracing",
    "disable_tracing",
    "install_json_logs",
    "prometheus_text",
    "register_metrics",
    "tracing_enabled",
]

# Whether floodwall traces: the FastAPI adapters look for the app's trace context only then.
_tracing = False


def configure_tracing(
    otlp_endpoint: str | None = None,
    sampling_ratio: float = 1.0,
    record_raw_keys: bool = False,
    service_name: str = "floodwall",
) -> None:
    """Turn on (or reconfigure) a ``floodwall.check`` span per decision. ``otlp_endpoint``: an
    OTLP/HTTP traces endpoint, e.g. "http://localhost:4318/v1/traces" (None: spans are made, for
    the trace context, but not exported). ``sampling_ratio``: the share of new traces sampled (a
    sampled parent is always followed)."""
    global _tracing
    _floodwall.configure_tracing(otlp_endpoint, sampling_ratio, record_raw_keys, service_name)
    _tracing = True


def disable_tracing() -> None:
    """Turn tracing off; spans already ended are flushed."""
    global _tracing
    _tracing = False
    _floodwall.disable_tracing()


def tracing_enabled() -> bool:
    """Whether ``configure_tracing`` (or the test helper) turned tracing on."""
    return _tracing


def install_json_logs(filter: str = "floodwall=warn") -> None:
    """The core's warnings and errors (store failures, breaker transitions, clock skew) as one JSON
    object per line on stderr, with ``trace_id`` inside a traced decision. ``filter`` is an
    env-filter directive. Does nothing if a Rust ``tracing`` subscriber is already installed."""
    _floodwall.install_json_logs(filter)


def prometheus_text() -> str:
    """Every live limiter's metrics in the Prometheus text format (0.0.4), labelled by limiter
    name (``Limiter(name=...)``, default its prefix)."""
    return _floodwall.prometheus_text()


def _families(with_samples: bool) -> Iterator[Metric]:
    from prometheus_client.metrics_core import Metric

    for name, help, kind, samples in _floodwall._metric_families():
        # prometheus_client names a counter family without "_total" and its samples with it.
        base = name[: -len("_total")] if kind == "counter" and name.endswith("_total") else name
        m = Metric(base, help, kind)
        if with_samples:
            for suffix, labels, value in samples:
                sample_name = name + suffix
                m.add_sample(sample_name, dict(labels), value)
        yield m


class _Collector:
    """A prometheus_client collector over the core's metric families (one read per scrape)."""

    def collect(self) -> Iterator[Metric]:
        return _families(True)

    def describe(self) -> Iterator[Metric]:
        return _families(False)


_registered: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()


def register_metrics(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """Serve floodwall's metrics from a ``prometheus_client`` registry (default
    ``prometheus_client.REGISTRY``), so that ``generate_latest`` / ``make_asgi_app`` include them.
    Registering the same registry twice does nothing. Needs ``pip install prometheus-client``."""
    if registry is None:
        try:
            from prometheus_client import REGISTRY
        except ImportError:
            raise _floodwall.ConfigError(
                "register_metrics: prometheus_client is not installed; pip install prometheus-client"
            ) from None
        registry = REGISTRY
    if not hasattr(registry, "register"):
        raise _floodwall.ConfigError(f"invalid registry {registry!r}: must be a prometheus_client CollectorRegistry")
    if registry in _registered:
        return registry
    registry.register(_Collector())
    _registered.add(registry)
    return registry


if hasattr(_floodwall, "_enable_test_tracing"):
    # A test build of the native module (cargo feature test-hooks, bindings-python/test.sh): its
    # in-memory tracing. A plain `pip install .` has none, and these are not defined.
    _native_hooks: Any = _floodwall

    def _enable_test_tracing(record_raw_keys: bool = False, sampling_ratio: float = 1.0) -> None:
        """Tests: trace decisions into memory (read with ``_finished_spans``)."""
        global _tracing
        _native_hooks._enable_test_tracing(record_raw_keys, sampling_ratio)
        _tracing = True

    def _finished_spans() -> list[dict[str, Any]]:
        """Tests: the spans held in memory, oldest first (name, trace_id, span_id, parent_span_id,
        attributes, error, status, events)."""
        spans: list[dict[str, Any]] = _native_hooks._finished_spans()
        return spans

    def _clear_finished_spans() -> None:
        """Tests: forget the spans held in memory."""
        _native_hooks._clear_finished_spans()
