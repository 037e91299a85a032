"""Prometheus metrics of the monitor, in a registry of its own (no process-global state)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "haproxy_monitor"


class ServerStatusCollector(Collector):
    """Per-backend-server status as last read from HAProxy's stats socket."""

    def __init__(self, read: Callable[[], Iterable[tuple[str, str, str, str, int]]]) -> None:
        self._read = read  # (proxy, server, status, check_status, current_sessions)

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            f"{PREFIX}_server_up", "1 when HAProxy reports the server UP", labels=["proxy", "server"]
        )
        status = GaugeMetricFamily(
            f"{PREFIX}_server_status",
            "HAProxy's status of the server (value 1 on the current status/check label pair)",
            labels=["proxy", "server", "status", "check_status"],
        )
        sessions = GaugeMetricFamily(
            f"{PREFIX}_server_current_sessions", "Current sessions on the server", labels=["proxy", "server"]
        )
        for proxy, server, state, check, scur in self._read():
            up.add_metric([proxy, server], 1.0 if state.startswith("UP") else 0.0)
            status.add_metric([proxy, server, state, check], 1.0)
            sessions.add_metric([proxy, server], float(scur))
        yield up
        yield status
        yield sessions


class Metrics:
    """All instruments; the loop updates them, the HTTP endpoint exposes ``registry``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
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
        self.backends = Gauge(f"{PREFIX}_backends", "Backends in the applied configuration", registry=r)
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
        Gauge(
            f"{PREFIX}_api_requests", "HTTP requests sent to the API (total)", registry=self.registry
        ).set_function(requests)
        Gauge(
            f"{PREFIX}_watch_restarts", "Watch streams re-opened (total)", registry=self.registry
        ).set_function(restarts)

    def server_status(self, read: Callable[[], Iterable[tuple[str, str, str, str, int]]]) -> None:
        self.registry.register(ServerStatusCollector(read))
