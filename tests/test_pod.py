"""container/haproxy-pod.yaml itself, run by ``podman kube play`` in a network namespace of its own.

The manifest is played as shipped except for what a test host must change: the hostPath directories point at
a test tree, the image is the one .ci/image built, and the pod's and volumes' names carry a random suffix.
Beside it, in the same namespace (its "host network"), run the simulated API server and one TLS server per
master answering /readyz, so HAProxy has real backends to check and serve.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from monitor.shipped import template_text
from monitor.testbed.apiserver import KubeSim
from monitor.testbed.haproxy import FakeApiServer
from tests.conftest import IN_CI
from tests.netns import available, run

REPO = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("HAPROXY_MONITOR_IMAGE", "localhost/haproxy-monitor:ci")
PODMAN_ENV = {
    **os.environ,
    "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(REPO / ".ci" / "containers.conf")),
}
MASTER = {"node-role.kubernetes.io/master": ""}
# On the namespace's loopback interface (the monitor refuses loopback addresses as backends, not these).
ADDRESSES = {"master-0": "198.51.100.11", "master-1": "198.51.100.12", "master-2": "198.51.100.13"}
SPARE = "198.51.100.14"
COMMENT = "OCP_API_LB_REDIRECT"
CLONE_NEWNET = 0x40000000

pytestmark = [
    pytest.mark.netns,
    pytest.mark.haproxy,
    pytest.mark.skipif(available() is not None, reason=f"netns tests: {available()}"),
    pytest.mark.timeout(300),
]


@contextlib.contextmanager
def inside(netns: str) -> Iterator[None]:
    """This thread in ``netns``: sockets created meanwhile live there, whichever thread serves them later."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns}")
        yield
    finally:
        libc.setns(own, CLONE_NEWNET)
        os.close(own)
        os.close(target)


def podman(
    netns: str | None, *argv: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    # nsenter, not `ip netns exec`: that one mounts a fresh /sys without the cgroup tree podman needs.
    prefix = ["nsenter", f"--net=/run/netns/{netns}"] if netns else []
    proc = subprocess.run(
        [*prefix, "podman", *argv],
        env=PODMAN_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"
        )
    return proc


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{log()}")
        time.sleep(0.2)


@dataclass
class Pod:
    netns: str
    name: str
    manifest: Path
    sim: KubeSim

    def get(self, url: str, *, auth: tuple[str, str] | None = None) -> tuple[int, str]:
        """An HTTP GET from the pod's host network (the namespace); (0, reason) when nothing answers."""
        request = urllib.request.Request(url)
        if auth:
            import base64

            request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with inside(self.netns):
            try:
                with urllib.request.urlopen(request, timeout=2, context=context) as answer:
                    return answer.status, answer.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, ""
            except OSError as exc:
                return 0, str(exc)

    def served(self) -> dict[str, str]:
        """HAProxy's own view of the masters backend (``show servers state`` on its admin socket): name → address."""
        # The admin socket is in the pod's lib-run-dir emptyDir, a podman volume the host can reach (as a kubelet
        # host could reach /var/lib/kubelet/pods/...); the stats page's CSV has no addresses in HAProxy 2.6.
        volume = podman(
            None, "volume", "inspect", "--format", "{{.Mountpoint}}", f"{self.name}-lib-run-dir"
        ).stdout
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2)
                sock.connect(str(Path(volume.strip()) / "haproxy.sock"))
                sock.sendall(b"show servers state masters\n")
                text = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
        except OSError as exc:
            self.last_stats = f"admin socket: {exc}"
            return {}
        self.last_stats = f"admin socket: {text[:600]}"
        lines = [line.split() for line in text.splitlines() if line.strip()]
        header = next((line[1:] for line in lines if line[0] == "#"), [])
        rows = [dict(zip(header, line, strict=False)) for line in lines if line[0] not in ("#", "1")]
        return {r["srv_name"]: r["srv_addr"] for r in rows if "srv_name" in r and r["srv_name"] != "dummy"}

    def rules(self) -> int:
        return run(self.netns, "nft", "list", "ruleset").count(COMMENT)

    def logs(self) -> str:
        out = [getattr(self, "last_stats", "")]
        for container in ("haproxy", "haproxy-monitor"):
            proc = podman(None, "logs", "--tail", "30", f"{self.name}-{container}", check=False)
            out.append(f"--- {container}\n{proc.stdout}{proc.stderr}")
        return "\n".join(out)


def play_manifest(tmp: Path, name: str) -> Path:
    pod = yaml.safe_load((REPO / "container" / "haproxy-pod.yaml").read_text())
    pod["metadata"]["name"] = name
    tree = {
        "/etc/kubernetes/static-pod-resources/haproxy": tmp / "static-pod-resources",
        "/var/lib/kubelet": tmp / "kubelet",
        "/etc/haproxy": tmp / "etc-haproxy",
    }
    renamed = {}
    for volume in pod["spec"]["volumes"]:
        if "hostPath" in volume:
            volume["hostPath"]["path"] = str(tree[volume["hostPath"]["path"]])
        else:  # podman makes each emptyDir a named volume: names of its own, so parallel runs never share one
            renamed[volume["name"]] = volume["name"] = f"{name}-{volume['name']}"
    for container in pod["spec"]["containers"]:
        container["image"] = IMAGE
        for mount in container["volumeMounts"]:
            mount["name"] = renamed.get(mount["name"], mount["name"])
    path = tmp / "pod.yaml"
    path.write_text(yaml.safe_dump(pod, sort_keys=False))
    return path


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[Pod]:
    if shutil.which("podman") is None or podman(None, "image", "exists", IMAGE, check=False).returncode != 0:
        if IN_CI:
            pytest.fail(f"podman and {IMAGE} are required in CI (.ci/run runs .ci/image first)")
        pytest.skip(f"podman or the image {IMAGE} missing (bash .ci/setup && bash .ci/image)")
    netns = f"hm-pod-{os.getpid()}{uuid.uuid4().hex[:6]}"
    name = f"hm-pod-{uuid.uuid4().hex[:8]}"
    run(None, "ip", "netns", "add", netns)
    sim = None
    apis: list[FakeApiServer] = []
    manifest = None
    try:
        run(netns, "ip", "link", "set", "lo", "up")
        for address in (*ADDRESSES.values(), SPARE):
            run(netns, "ip", "addr", "add", f"{address}/32", "dev", "lo")
        with inside(netns):
            sim = KubeSim(directory=tmp_path / "api").start()
            apis = [
                FakeApiServer(cert_dir=tmp_path / "apis", address=a, port=6443)
                for a in (*ADDRESSES.values(), SPARE)
            ]
        for node, address in ADDRESSES.items():
            sim.add_node(node, labels=MASTER, addresses=[("InternalIP", address)])
        (tmp_path / "kubelet").mkdir()
        sim.write_kubeconfig(tmp_path / "kubelet" / "kubeconfig", embed=True)
        (tmp_path / "static-pod-resources").mkdir()
        (tmp_path / "static-pod-resources" / "haproxy.cfg.tmpl").write_text(template_text("haproxy.cfg.tmpl"))
        (tmp_path / "etc-haproxy").mkdir()
        manifest = play_manifest(tmp_path, name)
        podman(netns, "kube", "play", str(manifest))
        yield Pod(netns=netns, name=name, manifest=manifest, sim=sim)
    finally:
        if manifest is not None:
            podman(netns, "kube", "down", str(manifest), check=False)
            podman(None, "pod", "rm", "-f", name, check=False)
        run(None, "ip", "netns", "delete", netns, check=False)
        for api in apis:
            api.stop()
        if sim is not None:
            sim.stop()


def test_the_static_pod_serves_the_masters_follows_a_node_change_and_cleans_up_on_kube_down(pod: Pod):
    started = time.monotonic()
    wait_until(
        lambda: pod.served() == ADDRESSES, timeout=90, what="HAProxy serving the three masters", log=pod.logs
    )
    first_config = time.monotonic() - started
    # Both liveness probes, as the kubelet would send them on the host network.
    assert pod.get("http://127.0.0.1:9444/haproxy_ready")[0] == 200
    assert pod.get("http://127.0.0.1:9448/healthz")[0] == 200
    # API traffic through HAProxy's LB port reaches an API server.
    assert pod.get("https://127.0.0.1:9445/readyz") == (200, "ok")
    # A node change reaches HAProxy through the master socket the two containers share.
    pod.sim.update_node("master-1", addresses=[("InternalIP", SPARE)])
    wait_until(
        lambda: pod.served() == {**ADDRESSES, "master-1": SPARE},
        timeout=30,
        what="the change served",
        log=pod.logs,
    )
    # Healthy three checks in a row at the default 6 s: the monitor steers the VIP into HAProxy.
    wait_until(lambda: pod.rules() == 2, timeout=60, what="the steering rules", log=pod.logs)
    # As the kubelet stops a pod: SIGTERM, then the grace period. (podman 4.3's `kube down` alone removes the
    # containers without that: the monitor would get no chance to remove its rules.)
    stopping = time.monotonic()
    podman(pod.netns, "pod", "stop", "-t", "65", pod.name)
    stopped = time.monotonic() - stopping
    assert pod.rules() == 0, run(pod.netns, "nft", "list", "ruleset")
    podman(pod.netns, "kube", "down", str(pod.manifest))
    print(
        f"\npod: HAProxy served the masters {first_config:.1f} s after kube play; pod stopped in {stopped:.1f} s"
    )
