"""Build and drive the Go oracle; render the same cases with monitor's engine; compare."""

from __future__ import annotations

import base64
import difflib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from monitor.render.data import go_data, lbconfig_from_json
from monitor.render.gotemplate import GoTemplateError, parse_go_template

ORACLE_SOURCE = Path(__file__).with_name("oracle.go")


@dataclass(frozen=True)
class Case:
    """One template + data; mode "lbconfig" (reference structs) or "generic" (JSON as maps/slices)."""

    name: str
    template: str
    data: Any
    mode: str = "generic"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    out: bytes
    err: str


def build_oracle(workdir: Path) -> Path:
    """go build oracle.go into workdir (stdlib only; GOPATH mode, private caches)."""
    binary = workdir / "oracle"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        if os.environ.get("CI") == "true":
            pytest.fail("go is required for the text/template oracle (install golang-go)")
        pytest.skip("go not installed: the text/template oracle cannot be built")
    env = dict(os.environ)
    for var, sub in (("GOCACHE", "gocache"), ("GOPATH", "gopath"), ("HOME", "home")):
        if not env.get(var):
            (workdir / sub).mkdir(exist_ok=True)
            env[var] = str(workdir / sub)
    env["GO111MODULE"] = "off"
    env["CGO_ENABLED"] = "0"
    tmp_binary = workdir / "oracle.tmp"
    subprocess.run([go, "build", "-o", str(tmp_binary), str(ORACLE_SOURCE)], env=env, check=True, timeout=300)
    tmp_binary.rename(binary)
    return binary


def go_json(data: Any) -> Any:
    """Data as both sides see it after JSON: ints beyond int64 are floats in Go (and so here)."""
    if isinstance(data, bool) or data is None or isinstance(data, str | float):
        return data
    if isinstance(data, int):
        return data if -(1 << 63) <= data < (1 << 63) else float(data)
    if isinstance(data, list):
        return [go_json(x) for x in data]
    if isinstance(data, dict):
        return {k: go_json(v) for k, v in data.items()}
    raise TypeError(type(data))


def _wire_data(case: Case) -> Any:
    if case.mode == "lbconfig":
        lb = lbconfig_from_json(case.data)
        # The engine models "no backends" as a nil slice like the reference; JSON null gives Go that.
        return {
            "LBConfig": {
                "ApiPort": lb.api_port,
                "LbPort": lb.lb_port,
                "StatPort": lb.stat_port,
                "FrontendAddr": lb.frontend_addr,
                "Backends": [{"Host": b.host, "Address": b.address, "Port": b.port} for b in lb.backends]
                or None,
            }
        }
    return case.data


def run_go(binary: Path, cases: list[Case]) -> list[Outcome]:
    lines = [
        json.dumps({"name": c.name, "template": c.template, "mode": c.mode, "data": _wire_data(c)})
        for c in cases
    ]
    proc = subprocess.run(
        [str(binary), "-batch"],
        input=("\n".join(lines) + "\n").encode(),
        capture_output=True,
        check=True,
        timeout=120,
    )
    results = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert len(results) == len(cases), proc.stderr.decode()
    return [Outcome(r["ok"], base64.b64decode(r["out_b64"]), r["err"]) for r in results]


def run_python(case: Case) -> Outcome:
    try:
        template = parse_go_template(case.template, name=case.name)
        if case.mode == "lbconfig":
            data: object = go_data(lbconfig_from_json(case.data))
        else:
            data = json.loads(json.dumps(go_json(case.data)))
        out = template.execute(data)
    except GoTemplateError as exc:
        return Outcome(False, b"", str(exc))
    return Outcome(True, out.encode("utf-8", "surrogateescape"), "")


def mismatch_report(case: Case, go: Outcome, py: Outcome) -> str | None:
    """None when both agree (same bytes, or the same error message); else a readable explanation with a diff."""
    if go.ok and py.ok and go.out == py.out:
        return None
    if not go.ok and not py.ok and go.err == py.err:
        return None
    head = f"case {case.name!r} mode={case.mode}\ntemplate: {case.template!r}\ndata: {json.dumps(case.data)[:500]}\n"
    if go.ok != py.ok:
        return (
            head
            + f"go ok={go.ok} err={go.err!r} out={go.out[:300]!r}\npy ok={py.ok} err={py.err!r} out={py.out[:300]!r}"
        )
    diff = difflib.unified_diff(
        go.out.decode("utf-8", "replace").splitlines(keepends=True),
        py.out.decode("utf-8", "replace").splitlines(keepends=True),
        "go",
        "python",
    )
    return head + "".join(diff) + f"\ngo bytes: {go.out[:300]!r}\npy bytes: {py.out[:300]!r}"


def compare(binary: Path, cases: list[Case]) -> list[str]:
    """Run every case through Go and Python; the list of mismatch reports (empty when all agree)."""
    reports = []
    for case, go in zip(cases, run_go(binary, cases), strict=True):
        report = mismatch_report(case, go, run_python(case))
        if report is not None:
            reports.append(report)
    return reports
