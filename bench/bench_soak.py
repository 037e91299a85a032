"""Soak benchmark: days of a sidecar's life in minutes; prints per-round CPU, RSS, fds and threads.

10,000 watch reconnects (the server ends the watch as its timeout does; 1 in 50 is cut abruptly), 1,000
backend changes (each until HAProxy serves it), 100,000 /metrics scrapes (two keep-alive clients) and 1,000
kubelet client-certificate rotations (each until the monitor watches with the new certificate), against the
simulated API and a real HAProxy, in 10 rounds run the same way; the first is the warm-up. The monitor runs as
in the static pod (Go template, stats from the stats page) with steering on, a 1 s check interval and a 50 ms
settle time. The workload lives in ``monitor.testbed.soak`` (``tests/test_soak.py`` runs a short one).

Run: .venv/bin/python bench/bench_soak.py [--scale 1.0] [--rounds 10] [--layout pod|socket] [--json]
"""

from __future__ import annotations

import sys

from monitor.testbed.soak import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
