"""A simulated Kubernetes API server (nodes, endpointslices) speaking the real wire protocol, for tests and demos."""

from monitor.testbed.apiserver.simulator import (
    ENDPOINTSLICES,
    GARBLED_EVENTS,
    GARBLED_LISTS,
    NODES,
    KubeSim,
    RequestRecord,
    SelectorError,
    parse_selector,
)

__all__ = [
    "ENDPOINTSLICES",
    "GARBLED_EVENTS",
    "GARBLED_LISTS",
    "NODES",
    "KubeSim",
    "RequestRecord",
    "SelectorError",
    "parse_selector",
]
