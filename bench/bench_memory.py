"""What the main job's memory is made of: RSS after each group of imports, in a fresh interpreter; prints figures.

Each step imports what the main job imports, in the order it does (the official client's kubeconfig loader the
lean way, see ``monitor/adapters/kube/official.py``); a second run shows what the same loader cost through the
``kubernetes`` package's ``__init__`` (every API class and model) and the health check's ``requests``. The
last column is what tracemalloc counts as allocated by Python objects for the step, from a separate traced
run (the rest of RSS is code: the interpreter, shared libraries such as OpenSSL's, and the allocator's slack).
``bench/bench_idle.py`` measures the running process (peak RSS with everything started).

Run: .venv/bin/python bench/bench_memory.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

LEAN = [
    ("python + site", []),
    ("ssl (OpenSSL)", ["ssl"]),
    ("stdlib: logging, email, http.client, json, dataclasses, ...", ["logging", "http.client", "json", "dataclasses"]),
    ("urllib3 (its URL regexes, importlib.metadata for http2)", ["urllib3"]),
    ("yaml", ["yaml"]),
    ("prometheus_client", ["prometheus_client"]),
    ("monitor: cli, app, loop, render (Go engine), metrics", ["monitor.cli", "monitor.app"]),
    ("jinja2 (only for .j2 templates)", ["jinja2"]),
    ("monitor adapters but kube", [
        "monitor.adapters.filewatch", "monitor.adapters.health", "monitor.adapters.nftables",
        "monitor.adapters.httpserver", "monitor.adapters.netif",
    ]),
    ("kube adapter with the official loader, lean", ["monitor.adapters.kube"]),
]  # fmt: skip
FULL = [
    *LEAN[:-1],
    ("requests (the health check before)", ["requests"]),
    ("kubernetes.client.configuration (runs every __init__)", ["kubernetes.client.configuration"]),
    ("kubernetes.config.kube_config (+ oauthlib, requests_oauthlib)", ["kubernetes.config.kube_config"]),
]

PROBE = r"""
import importlib, json, sys, tracemalloc
steps, trace = json.loads(sys.argv[1]), sys.argv[2] == "trace"
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
if trace:
    tracemalloc.start()
out = []
for name, modules in steps:
    before = tracemalloc.get_traced_memory()[0] if trace else 0
    for m in modules:
        importlib.import_module(m)
    out.append([name, rss(), (tracemalloc.get_traced_memory()[0] - before) / 2**20 if trace else 0.0])
print(json.dumps(out))
"""


def _probe(steps: list[tuple[str, list[str]]], mode: str) -> list[list[object]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(steps), mode],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    rows: list[list[object]] = json.loads(done.stdout)
    return rows


def run(steps: list[tuple[str, list[str]]]) -> list[tuple[str, float, float]]:
    """RSS from a plain run (tracemalloc's own bookkeeping would double it), Python's share from a traced one."""
    plain, traced = _probe(steps, "plain"), _probe(steps, "trace")
    return [(str(p[0]), float(p[1]), float(t[2])) for p, t in zip(plain, traced, strict=True)]  # type: ignore[arg-type]


def table(title: str, rows: list[tuple[str, float, float]]) -> None:
    print(title)
    print(f"  {'step':64} {'RSS MB':>7} {'+MB':>6} {'Python MB':>9}")
    previous = 0.0
    for name, rss, traced in rows:
        print(f"  {name:64} {rss:7.1f} {rss - previous:+6.1f} {traced:9.2f}")
        previous = rss


def main() -> int:
    table("the main job's imports, in order (RSS after each step):", run(LEAN))
    table("the same with the official client's package __init__ and requests, as before:", run(FULL))
    print("(The running monitor adds its threads, TLS contexts and data: see bench_idle.py's peak RSS.)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
