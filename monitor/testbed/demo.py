"""``monitor demo``: the main job end to end on an embedded control plane, with a real HAProxy, on loopback."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from monitor.settings import Settings

MASTER_LABEL = {"node-role.kubernetes.io/master": ""}


def shipped_template(workdir: Path, name: str = "haproxy.cfg.j2") -> Path:
    """The package's own template copied into the work directory (the package may be a zip archive)."""
    from monitor.shipped import template_text

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / name
    path.write_text(template_text(name), encoding="utf-8")
    return path


class Step:
    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out
        self.n = 0

    def __call__(self, text: str) -> None:
        self.n += 1
        self.out(f"\n[{self.n}] {text}")


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="monitor demo",
        description="Run the monitor against a simulated control plane and a real HAProxy, then exit.",
    )
    p.add_argument(
        "--keep", action="store_true", help="keep the work directory (configs, logs) for inspection"
    )
    p.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for HAProxy at each step")
    args = p.parse_args(argv)
    if shutil.which("haproxy", path="/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin") is None:
        print("monitor demo: haproxy is not installed (apt-get install haproxy)", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="monitor-demo-"))
    try:
        return _demo(workdir, timeout=args.timeout)
    finally:
        if args.keep:
            print(f"\nwork directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _demo(workdir: Path, *, timeout: float) -> int:
    from monitor import logs
    from monitor.app import run
    from monitor.events import Stop
    from monitor.loop import Monitor
    from monitor.testbed.apiserver import KubeSim
    from monitor.testbed.haproxy import FakeApiServer, HaproxyLab, free_port

    def say(text: str) -> None:
        print(text, flush=True)

    step = Step(say)
    logs.setup(fmt="text", level="warning")
    step("simulated control plane: an HTTPS API server (client-certificate auth) with three master nodes")
    sim = KubeSim(directory=workdir / "api").start()
    api_port = free_port()
    addresses = {"master-0": "127.0.0.11", "master-1": "127.0.0.12", "master-2": "127.0.0.13"}
    spare = ["127.0.0.21", "127.0.0.14"]
    apis = [
        FakeApiServer(cert_dir=workdir / "apis", address=a, port=api_port)
        for a in [*addresses.values(), *spare]
    ]
    for name, address in addresses.items():
        sim.add_node(name, labels=MASTER_LABEL, addresses=[("InternalIP", address), ("Hostname", name)])
    kubeconfig = sim.write_kubeconfig(workdir / "kubeconfig")
    say(f"    API {sim.url}; kube-apiservers answer /readyz on 127.0.0.11-13:{api_port}")

    step("HAProxy started by the container's reload handler (master socket, seamless reloads)")
    lab = HaproxyLab(workdir=workdir / "haproxy", template=shipped_template(workdir / "template"))
    lab.start_handler()
    say(f"    config {lab.cfg_path}; reload socket {lab.master_socket}; LB port {lab.lb_port}")

    settings = Settings(
        kubeconfig=kubeconfig,
        template=lab.template_path,
        cfg=lab.cfg_path,
        api_vips=("127.0.0.10",),
        api_port=api_port,
        lb_port=lab.lb_port,
        stat_port=lab.stat_port,
        check_interval=1.0,
        reload_socket=lab.master_socket,
        fallback_server=sim.url,
        steering=False,
        stats_socket=lab.admin_socket,
        health_url=f"http://127.0.0.1:{lab.monitor_port}/haproxy_monitor",
        listen=None,
    )
    holder: list[Monitor] = []
    thread = threading.Thread(
        target=run,
        kwargs={"settings": settings, "install_signals": False, "ready": holder.append},
        daemon=True,
    )
    failures = 0

    def expect(want: dict[str, str], what: str, since: float) -> None:
        nonlocal failures
        deadline = since + timeout
        while time.monotonic() < deadline:
            try:
                servers = lab.servers()
            except Exception:
                servers = {}
            got = {name: s.address.rsplit(":", 1)[0] for name, s in servers.items()}
            if got == want and all(s.status.startswith("UP") for s in servers.values()):
                say(f"    HAProxy serves {_fmt(got)} — {what} in {time.monotonic() - since:.2f} s")
                return
            time.sleep(0.02)
        failures += 1
        say(f"    FAILED: after {timeout:.0f} s HAProxy still serves {_fmt(got)}; wanted {_fmt(want)}")

    step(
        "monitor started: list + watch nodes, render, validate, write atomically, reload "
        "(server changes later go over the admin socket)"
    )
    t0 = time.monotonic()
    thread.start()
    expect(dict(addresses), "first config applied", t0)

    step("master-1 changes its address to 127.0.0.21")
    t0 = time.monotonic()
    sim.update_node("master-1", addresses=[("InternalIP", "127.0.0.21")])
    addresses["master-1"] = "127.0.0.21"
    expect(dict(addresses), "change served", t0)

    step("master-2 is deleted")
    t0 = time.monotonic()
    sim.delete_node("master-2")
    del addresses["master-2"]
    expect(dict(addresses), "removal served", t0)

    step("master-3 joins at 127.0.0.14")
    t0 = time.monotonic()
    sim.add_node("master-3", labels=MASTER_LABEL, addresses=[("InternalIP", "127.0.0.14")])
    addresses["master-3"] = "127.0.0.14"
    expect(dict(addresses), "addition served", t0)

    step("stopping: SIGTERM-equivalent to the monitor, then HAProxy and the API")
    t0 = time.monotonic()
    if holder:
        holder[0].post(Stop("demo finished"))
    thread.join(5)
    say(f"    monitor stopped in {time.monotonic() - t0:.2f} s")
    reloads = holder[0].metrics.reloads._value.get() if holder else 0
    runtime = holder[0].metrics.runtime_applies._value.get() if holder else 0
    lab.stop()
    sim.stop()
    for api in apis:
        api.stop()
    outcome = "demo FAILED" if failures else "demo passed"
    say(f"\n{outcome}: {int(reloads)} reloads, {int(runtime)} runtime changes, {failures} failed steps")
    return 1 if failures else 0


def _fmt(servers: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(servers.items())) or "(nothing)"
