"""A simulated Kubernetes API server (nodes, endpointslices) speaking the real wire protocol, for tests and demos."""

from monitor.testbed.apiserver.faults import GARBLED_EVENTS, GARBLED_LISTS
from monitor.testbed.apiserver.objects import ENDPOINTSLICES, NODES
from monitor.testbed.apiserver.selectors import SelectorError, parse_selector
from monitor.testbed.apiserver.simulator import KubeSim, RequestRecord

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
