"""haproxy-monitor: keeps HAProxy's backend list equal to the live set of Kubernetes API servers."""

__version__ = "0.1.0"
