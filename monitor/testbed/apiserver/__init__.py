"""A simulated Kubernetes API server (nodes, endpointslices) speaking the real wire protocol, for tests and demos.

``KubeSim`` (simulator) is the control surface a test drives; it holds the parts the request threads share:
``store`` (objects, resourceVersions, events, compaction), ``selectors`` (label and field selectors, queries),
``objects`` (the Node, EndpointSlice and Status bodies), ``faults`` (the fault switches and garbled answers),
``connections`` (open connections and watch streams, the request log). The wire side: ``server`` (TLS and the
handshake), ``handler`` (authentication, routing, gets, lists) and ``watch`` (one chunked watch stream).
"""

from monitor.testbed.apiserver.connections import RequestRecord
from monitor.testbed.apiserver.faults import GARBLED_EVENTS, GARBLED_LISTS
from monitor.testbed.apiserver.objects import ENDPOINTSLICES, NODES
from monitor.testbed.apiserver.selectors import SelectorError, parse_selector
from monitor.testbed.apiserver.simulator import KubeSim

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
