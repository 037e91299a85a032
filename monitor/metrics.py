"""Prometheus metrics of the monitor, in a registry of its own (no process-global state)."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor import __version__

if TYPE_CHECKING:
    from monitor.model import ServerState

PREFIX = "haproxy_monitor"
# Backend change seen → config written: the settle window (1.5 s by default, 10 s at most) plus render and write.
APPLY_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 15.0, 30.0, 60.0)
DRAIN_BUCKETS = (0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ServerStatusCollector(Collector):
    """Per-server status read from HAProxy at scrape time (``read`` has its own deadline and size cap)."""

    def __init__(self, read: Callable[[], Sequence[ServerState]]) -> None:
        self._read = read

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                f"{PREFIX}_server_up",
                "1 when HAProxy sends the server traffic (UP, UP going down, or no check)",
                labels=["proxy", "server"],
            ),
            GaugeMetricFamily(
                f"{PREFIX}_server_status",
                "HAProxy's status of the server (value 1 on the current status/check label pair)",
                labels=["proxy", "server", "status", "check_status"],
            ),
            GaugeMetricFamily(
                f"{PREFIX}_server_current_sessions",
                "Current sessions on the server",
                labels=["proxy", "server"],
            ),
            GaugeMetricFamily(
                f"{PREFIX}_stats_up", "1 when this scrape could read HAProxy's statistics, else 0"
            ),
            GaugeMetricFamily(
                f"{PREFIX}_stats_read_duration_seconds", "Time this scrape spent reading HAProxy's statistics"
            ),
        )

    def describe(self) -> Iterable[Metric]:
        # Without describe() the registry would call collect() at registration, i.e. read HAProxy.
        return self._families()

    def collect(self) -> Iterable[Metric]:
        up, status, sessions, stats_up, duration = self._families()
        start = time.monotonic()
        try:
            rows = self._read()
        except Exception:  # any failure must still leave a scrape that says so; the reader logs why
            rows = None
        duration.add_metric([], time.monotonic() - start)
        stats_up.add_metric([], 0.0 if rows is None else 1.0)
        for server in rows or ():
            up.add_metric([server.proxy, server.server], 1.0 if server.is_up else 0.0)
            status.add_metric([server.proxy, server.server, server.status, server.check_status], 1.0)
            sessions.add_metric([server.proxy, server.server], float(server.sessions))
        return (up, status, sessions, stats_up, duration)


class _FunctionCounters(Collector):
    """Running totals kept elsewhere (the watcher's), exposed as counters read at scrape time."""

    def __init__(self, counters: Sequence[tuple[str, str, Callable[[], float]]]) -> None:
        self._counters = counters

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(name, doc) for name, doc, _ in self._counters]

    def collect(self) -> Iterable[Metric]:
        return [CounterMetricFamily(name, doc, value=read()) for name, doc, read in self._counters]


class Metrics:
    """All instruments; the loop updates them, the HTTP endpoint exposes ``registry``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        Gauge(
            f"{PREFIX}_build_info",
            "Version of haproxy-monitor and of the Python running it (value 1)",
            ["version", "python"],
            registry=r,
        ).labels(version=__version__, python=platform.python_version()).set(1)
        self.reloads = Counter(
            f"{PREFIX}_reloads", "Reload lines delivered to HAProxy's container", registry=r
        )
        self.reload_failures = Counter(
            f"{PREFIX}_reload_failures", "Failed attempts to deliver a reload line", registry=r
        )
        self.render_errors = Counter(
            f"{PREFIX}_render_errors", "Template load or render failures", registry=r
        )
        self.validation_errors = Counter(
            f"{PREFIX}_validation_errors", "Rendered configs rejected by haproxy -c", registry=r
        )
        self.write_errors = Counter(f"{PREFIX}_write_errors", "Failed writes of haproxy.cfg", registry=r)
        self.applies = Counter(f"{PREFIX}_applies", "Backend sets applied (config written)", registry=r)
        self.apply_latency = Histogram(
            f"{PREFIX}_apply_latency_seconds",
            "Seconds from discovery first seeing a backend set to that set's config being written",
            buckets=APPLY_LATENCY_BUCKETS,
            registry=r,
        )
        self.reload_outcomes = Counter(
            f"{PREFIX}_reload_outcomes",
            "Delivered reloads by what the reload handler answered: confirmed, failed, unconfirmed (no answer)",
            ["outcome"],
            registry=r,
        )
        self.runtime_applies = Counter(
            f"{PREFIX}_runtime_applies",
            "Configs whose server changes HAProxy took over its admin socket, without a reload",
            registry=r,
        )
        self.runtime_fallbacks = Counter(
            f"{PREFIX}_runtime_fallbacks",
            "Written configs that needed a reload instead of runtime changes, by reason",
            ["reason"],
            registry=r,
        )
        self.drain_seconds = Histogram(
            f"{PREFIX}_drain_duration_seconds",
            "Seconds a removed server drained before its remaining sessions were cut and it was deleted",
            buckets=DRAIN_BUCKETS,
            registry=r,
        )
        self.backends = Gauge(f"{PREFIX}_backends", "Backends in the applied configuration", registry=r)
        self.empty_backend_set_refused = Gauge(
            f"{PREFIX}_empty_backend_set_refused",
            "1 while the API lists no usable backend and the last non-empty set is kept instead",
            registry=r,
        )
        self.internal_errors = Counter(
            f"{PREFIX}_internal_errors",
            "Unexpected exceptions caught (and logged with a traceback) in the loop and the adapter threads",
            registry=r,
        )
        self.last_apply = Gauge(
            f"{PREFIX}_last_apply_timestamp_seconds", "Unix time of the last successful apply", registry=r
        )
        self.fallback_active = Gauge(
            f"{PREFIX}_api_fallback_active",
            "1 while the API is read through the localhost fallback",
            registry=r,
        )
        self.api_reachable = Gauge(f"{PREFIX}_api_reachable", "1 while the API answers", registry=r)
        self.healthy = Gauge(
            f"{PREFIX}_haproxy_healthy", "Health state after hysteresis (1 healthy)", registry=r
        )
        self.steering_active = Gauge(
            f"{PREFIX}_steering_active", "1 while nftables steers API VIP traffic into HAProxy", registry=r
        )
        self.steering_errors = Counter(
            f"{PREFIX}_steering_errors", "nftables operations that failed", registry=r
        )

    def seconds_since_apply(self, since: Callable[[], float]) -> None:
        Gauge(
            f"{PREFIX}_seconds_since_last_apply",
            "Seconds since the last successful apply (or since start when none yet)",
            registry=self.registry,
        ).set_function(since)

    def watch_counters(self, *, requests: Callable[[], float], restarts: Callable[[], float]) -> None:
        self.registry.register(
            _FunctionCounters(
                [
                    (f"{PREFIX}_api_requests", "HTTP requests sent to the API", requests),
                    (f"{PREFIX}_watch_restarts", "Watch streams re-opened", restarts),
                ]
            )
        )

    def server_status(self, read: Callable[[], Sequence[ServerState]]) -> None:
        """Export per-server status; ``read`` is called on every scrape and may raise (exported as stats_up 0)."""
        self.registry.register(ServerStatusCollector(read))
