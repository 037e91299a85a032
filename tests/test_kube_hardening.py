"""The Kubernetes adapter under hostile or unlucky API servers and files: no garbage as data, no storm, no clear
text, no key left on disk, no unbounded or blocking read."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from monitor.adapters.kube.client import Limits
from monitor.adapters.kube.credentials import SecretDir
from monitor.adapters.kube.pacing import Pacer, retry_after_seconds
from monitor.events import Connectivity, Objects
from monitor.testbed.apiserver import GARBLED_EVENTS, GARBLED_LISTS, KubeSim
from monitor.testbed.pki import write_kubeconfig
from tests.conftest_kube import Recorder, add_master, running_watcher
from tests.test_e2e import ADDRESSES, Cluster, cluster, wait_for  # noqa: F401 - cluster is a fixture

BURST = Limits().burst


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[KubeSim]:
    with KubeSim(directory=tmp_path / "api", bookmark_interval=0.3) as server:
        add_master(server, "m0", "192.0.2.10")
        add_master(server, "m1", "192.0.2.11")
        yield server


def well_formed(snap: Objects) -> bool:
    return all(
        isinstance(o, dict) and isinstance(o["metadata"], dict) and isinstance(o.get("status"), dict)
        for o in snap.items
    )


def first_error(rec: Recorder, *, timeout: float = 15.0) -> Connectivity:
    """The first unreachable status (later ones may already say reachable again, after a relist)."""
    errors: list[Connectivity] = rec.wait_for(
        lambda r: [s for s in r.statuses() if not s.reachable], timeout=timeout, what="an error status"
    )
    return errors[0]


def relist(sim: KubeSim) -> None:
    """Make the watcher list again: its open watch is cut and the version it resumes from is gone."""
    sim.compact()
    sim.cut_streams()


# -- malformed answers are errors, not data --------------------------------------------------------------

LIST_PROBLEMS = {
    "no items": "list answer: it has no items",
    "items not a list": "list answer: items is an object, not a list",
    "an item not an object": "list answer: items[2] is a string, not an object",
    "metadata not an object": "items[0]: metadata is a string, not an object",
    "status not an object": "items[0] (m0): status is a string, not an object",
    "annotations not an object": "items[0] (m0): metadata.annotations is a list, not an object",
    "over 64 MiB": "over the 64 MiB limit",
}
EVENT_PROBLEMS = {
    "object not an object": "MODIFIED event object is a string, not an object",
    "status not an object": "MODIFIED event object (m1): status is a string, not an object",
    "annotations not an object": "MODIFIED event object (m1): metadata.annotations is a string, not an object",
    "over 16 MiB": "an event over 16 MiB",
}


def test_every_garbled_case_of_the_simulator_has_an_expected_error() -> None:
    assert set(LIST_PROBLEMS) == set(GARBLED_LISTS) and set(EVENT_PROBLEMS) == set(GARBLED_EVENTS)


@pytest.mark.parametrize("case", sorted(LIST_PROBLEMS))
def test_a_malformed_list_is_reported_as_an_error_and_never_replaces_the_objects_already_emitted(
    sim: KubeSim, tmp_path: Path, case: str
) -> None:
    rec = Recorder()
    with running_watcher(kubeconfig=sim.write_kubeconfig(tmp_path / "kc"), recorder=rec):
        rec.wait_names({"m0", "m1"})
        emitted = len(rec.snapshots())
        sim.garble(lists=case)
        relist(sim)
        status = first_error(rec)
        assert status.error is not None and status.error.startswith(f"{sim.url}: /api/v1/nodes: ")
        assert LIST_PROBLEMS[case] in status.error
        sim.update_node("m1", addresses=[("InternalIP", "192.0.2.21")])
        lists = sim.request_count("list")
        wait_for(lambda: sim.request_count("list") >= lists + 2, timeout=10, what="relists with backoff")
        assert len(rec.snapshots()) == emitted, "a malformed list was emitted as the object set"
        sim.clear_faults()
        rec.wait_for(
            lambda r: r.snapshots()[-1].items[1]["status"]["addresses"][0]["address"] == "192.0.2.21",
            timeout=10,
            what="the change, once the server answers well again",
        )
        rec.wait_status(lambda s: s.reachable)


@pytest.mark.parametrize("case", sorted(EVENT_PROBLEMS))
def test_a_malformed_watch_event_is_reported_and_leads_to_a_relist_never_to_an_object(
    sim: KubeSim, tmp_path: Path, case: str
) -> None:
    rec = Recorder()
    with running_watcher(kubeconfig=sim.write_kubeconfig(tmp_path / "kc"), recorder=rec):
        rec.wait_names({"m0", "m1"})
        lists = sim.request_count("list")
        sim.garble(events=case)
        sim.update_node("m1", addresses=[("InternalIP", "192.0.2.21")])
        status = first_error(rec)
        assert status.error is not None and status.error.startswith(f"{sim.url}: watch /api/v1/nodes: ")
        assert EVENT_PROBLEMS[case] in status.error
        # The list is well-formed: it brings the change the garbled event carried.
        rec.wait_for(
            lambda r: r.snapshots()[-1].items[1]["status"]["addresses"][0]["address"] == "192.0.2.21",
            timeout=10,
            what="the change, through a relist",
        )
        assert sim.request_count("list") > lists
        assert all(well_formed(snap) for snap in rec.snapshots())


@pytest.mark.haproxy
def test_a_malformed_list_keeps_haproxy_serving_and_the_monitor_process_running(cluster: Cluster) -> None:  # noqa: F811
    cluster.lab.start_handler()
    proc = cluster.start_monitor()
    wait_for(lambda: cluster.served() == ADDRESSES, timeout=15, what="the first config")
    good = cluster.lab.cfg_path.read_text()
    cluster.sim.garble(lists="status not an object")
    relist(cluster.sim)
    wait_for(
        lambda: "status is a string, not an object" in cluster.log(proc), timeout=15, what="the error logged"
    )
    lists = cluster.sim.request_count("list")
    wait_for(lambda: cluster.sim.request_count("list") >= lists + 2, timeout=15, what="relists with backoff")
    assert proc.poll() is None, cluster.log(proc)
    assert cluster.lab.cfg_path.read_text() == good
    assert cluster.served() == ADDRESSES
    cluster.sim.clear_faults()
    cluster.sim.update_node("master-1", addresses=[("InternalIP", "127.0.0.21")])
    wait_for(lambda: cluster.served() == {**ADDRESSES, "master-1": "127.0.0.21"}, timeout=15, what="recovery")
    assert proc.poll() is None


# -- no retry path exceeds one request per second ---------------------------------------------------------

WINDOW = 8.0


def _closed_port_kubeconfig(sim: KubeSim, tmp_path: Path) -> tuple[Path, socket.socket]:
    # A bound socket that never listens: the kernel refuses every connection, and nobody else takes the port.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    server = f"https://127.0.0.1:{closed.getsockname()[1]}"
    return sim.write_kubeconfig(tmp_path / "kc", server=server), closed


FAULTS = {
    "a watch answered with 410 every time": lambda sim: sim.expire_watches(),
    "a watch that ends at once": lambda sim: sim.end_watches(),
    "429 with Retry-After": lambda sim: sim.throttle(retry_after=2),
    "500 on every request": lambda sim: sim.status500(),
    "connections reset": lambda sim: sim.refuse(),
}


@pytest.mark.parametrize("fault", [*FAULTS, "connection refused"])
def test_no_failing_server_draws_more_than_one_request_per_second(
    sim: KubeSim, tmp_path: Path, fault: str
) -> None:
    rec = Recorder()
    if fault == "connection refused":
        kubeconfig, closed = _closed_port_kubeconfig(sim, tmp_path)
    else:
        kubeconfig, closed = sim.write_kubeconfig(tmp_path / "kc"), None
    with running_watcher(kubeconfig=kubeconfig, recorder=rec) as watcher:
        if closed is None:
            rec.wait_names({"m0", "m1"})
            FAULTS[fault](sim)
            sim.cut_streams()
            count = sim.request_count
        else:
            rec.wait_status(lambda s: not s.reachable)
            count = watcher.request_count
        # A window, not a synchronisation: the bound is a maximum, so a busy machine only sends fewer.
        before, start = count(), time.monotonic()
        time.sleep(WINDOW)
        sent, took = count() - before, time.monotonic() - start
    if closed is not None:
        closed.close()
    print(f"{fault}: {sent} requests in {took:.1f} s")
    assert sent <= took * Limits().rate + BURST, f"{sent} requests in {took:.1f} s"


def test_a_retry_after_is_honoured_before_the_next_request(sim: KubeSim, tmp_path: Path) -> None:
    rec = Recorder()
    with running_watcher(kubeconfig=sim.write_kubeconfig(tmp_path / "kc"), recorder=rec):
        rec.wait_names({"m0", "m1"})
        sim.throttle(retry_after=2)
        sim.cut_streams()
        start = len(sim.request_log())
        wait_for(lambda: len(sim.request_log()) >= start + 3, timeout=15, what="three throttled requests")
    arrivals = [r.at for r in sim.request_log()[start:]]
    # The server counts a request before it answers 429, so each gap is at least what it asked for.
    assert all(b - a >= 2.0 for a, b in itertools.pairwise(arrivals)), arrivals


def test_a_watch_that_times_out_normally_is_reopened_at_once_and_changes_arrive_within_a_second(
    sim: KubeSim, tmp_path: Path
) -> None:
    rec = Recorder()
    with running_watcher(
        kubeconfig=sim.write_kubeconfig(tmp_path / "kc"), recorder=rec, watch_timeout_range=(1.0, 1.0)
    ):
        rec.wait_names({"m0", "m1"})
        wait_for(lambda: sim.request_count("watch") >= 4, timeout=10, what="watches after normal timeouts")
        watches = [r.at for r in sim.request_log() if r.kind == "watch"]
        assert all(b - a < 2.0 for a, b in itertools.pairwise(watches)), watches  # 1 s each, no pause
        start = time.monotonic()
        sim.update_node("m1", addresses=[("InternalIP", "192.0.2.21")])
        rec.wait_for(
            lambda r: r.snapshots()[-1].items[1]["status"]["addresses"][0]["address"] == "192.0.2.21",
            timeout=5,
            what="the change",
        )
        assert time.monotonic() - start < 1.0


def test_the_pacer_lets_a_burst_through_then_one_request_per_second() -> None:
    now = [100.0]
    pacer = Pacer(rate=1.0, burst=3, clock=lambda: now[0])
    assert [pacer.reserve("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert [pacer.reserve("a") for _ in range(3)] == [1.0, 2.0, 3.0]
    now[0] += 10.0  # idle: the bucket fills again, up to the burst
    assert [pacer.reserve("a") for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]


def test_the_pacer_holds_requests_to_one_server_until_its_retry_after() -> None:
    now = [0.0]
    pacer = Pacer(rate=1.0, burst=3, clock=lambda: now[0])
    pacer.retry_after("a", 5.0)
    assert pacer.reserve("a") == 5.0
    assert pacer.reserve("b") == 0.0
    now[0] += 5.0
    assert pacer.reserve("a") == 0.0


def test_retry_after_reads_seconds_and_dates_and_is_capped() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("7", cap=30, now=now) == 7
    assert retry_after_seconds("3600", cap=30, now=now) == 30
    assert (
        retry_after_seconds(format_datetime(now + timedelta(seconds=12), usegmt=True), cap=30, now=now) == 12
    )
    assert (
        retry_after_seconds(format_datetime(now - timedelta(seconds=12), usegmt=True), cap=30, now=now) == 0
    )
    assert retry_after_seconds("soon", cap=30, now=now) is None
    assert retry_after_seconds(None, cap=30, now=now) is None


# -- credentials never travel without TLS -----------------------------------------------------------------


@pytest.fixture
def plain_listener() -> Iterator[socket.socket]:
    """A plain TCP listener that never accepts: any connection to it would wait in its backlog."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        yield listener


def connections_to(listener: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


@pytest.mark.parametrize("auth", ["client certificate", "token"])
def test_a_plain_http_fallback_server_is_refused_and_no_request_reaches_it(
    sim: KubeSim, tmp_path: Path, plain_listener: socket.socket, auth: str
) -> None:
    plain = f"http://127.0.0.1:{plain_listener.getsockname()[1]}"
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        primary = f"https://127.0.0.1:{closed.getsockname()[1]}"
        token = "s3cret" if auth == "token" else None
        kubeconfig = sim.write_kubeconfig(tmp_path / "kc", server=primary, token=token)
        rec = Recorder()
        with running_watcher(kubeconfig=kubeconfig, recorder=rec, fallback_server=plain):
            status = first_error(rec)
    assert status.error == (
        f"kubeconfig {kubeconfig}: connection refused by {primary}; "
        f"fallback server {plain} is not https://: no request is sent without TLS"
    )
    assert connections_to(plain_listener) == 0


@pytest.mark.parametrize("auth", ["client certificate", "token"])
def test_a_plain_http_server_in_the_kubeconfig_is_refused_and_no_request_reaches_it(
    sim: KubeSim, tmp_path: Path, plain_listener: socket.socket, auth: str
) -> None:
    plain = f"http://127.0.0.1:{plain_listener.getsockname()[1]}"
    token = "s3cret" if auth == "token" else None
    kubeconfig = sim.write_kubeconfig(tmp_path / "kc", server=plain, token=token)
    rec = Recorder()
    with running_watcher(kubeconfig=kubeconfig, recorder=rec):
        status = first_error(rec)
    assert (
        status.error
        == f"kubeconfig {kubeconfig}: server {plain} is not https://: no request is sent without TLS"
    )
    assert connections_to(plain_listener) == 0


# -- no key material left on disk -------------------------------------------------------------------------


def key_marker(key: Path) -> bytes:
    """A line from the middle of a PEM private key: found in any copy of it, and in nothing else."""
    lines = key.read_bytes().splitlines()
    return lines[len(lines) // 2]


def files_holding(marker: bytes, *roots: Path) -> list[Path]:
    found = []
    for root in roots:
        for path in root.rglob("*") if root.exists() else []:
            if path.is_file() and not path.is_symlink() and marker in path.read_bytes():
                found.append(path)
    return found


def test_embedded_keys_live_in_a_private_directory_only_while_the_watcher_runs(
    sim: KubeSim, tmp_path: Path
) -> None:
    pair = sim.client_cert(user="monitor")
    kubeconfig = write_kubeconfig(
        tmp_path / "kc", server=sim.url, ca_cert=sim.ca.cert, client=pair, embed=True
    )
    marker, secrets = key_marker(pair.key), tmp_path / "runtime"
    rec = Recorder()
    with running_watcher(kubeconfig=kubeconfig, recorder=rec, secrets_dir=secrets):
        rec.wait_names({"m0", "m1"})
        (copy,) = files_holding(marker, secrets)
        assert copy.stat().st_mode & 0o777 == 0o600
        private = [d for d in copy.parents if d.is_relative_to(secrets / f"haproxy-monitor-{os.getuid()}")]
        assert len(private) == 3 and all(d.stat().st_mode & 0o777 == 0o700 for d in private), private
    assert files_holding(marker, secrets) == []


def test_the_runs_of_killed_processes_are_swept_and_those_of_living_ones_kept(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from monitor.adapters.kube.credentials import SecretDir
        SecretDir(Path({str(tmp_path)!r})).write({{"client.key": sys.argv[1].encode()}})
        print("written", flush=True)
        time.sleep(60)
        """
    )
    procs = {
        name: subprocess.Popen([sys.executable, "-c", script, name], stdout=subprocess.PIPE, text=True)
        for name in ("killed-key", "living-key")
    }
    try:
        for proc in procs.values():
            assert proc.stdout is not None and proc.stdout.readline() == "written\n"
        procs["killed-key"].send_signal(signal.SIGKILL)
        procs["killed-key"].wait(5)
        SecretDir(tmp_path).sweep()
        assert files_holding(b"killed-key", tmp_path) == []
        assert len(files_holding(b"living-key", tmp_path)) == 1
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait(5)


@pytest.mark.haproxy
def test_no_key_is_left_on_disk_after_a_stop_or_after_a_kill_and_restart(cluster: Cluster) -> None:  # noqa: F811
    cluster.lab.start_handler()
    pair = cluster.sim.client_cert(user="monitor")
    kubeconfig = write_kubeconfig(
        cluster.tmp / "embedded.kubeconfig",
        server=cluster.sim.url,
        ca_cert=cluster.sim.ca.cert,
        client=pair,
        embed=True,
    )
    runtime, tmpdir = cluster.tmp / "xdg-runtime", cluster.tmp / "tmpdir"
    runtime.mkdir(mode=0o700)
    tmpdir.mkdir()
    env = ["env", f"XDG_RUNTIME_DIR={runtime}", f"TMPDIR={tmpdir}"]
    marker = key_marker(pair.key)

    killed = cluster.start_monitor(kubeconfig=kubeconfig, wrap=env)
    wait_for(lambda: cluster.served() == ADDRESSES, timeout=15, what="the first config")
    assert files_holding(marker, runtime, tmpdir), "the key copy is not where the test looks"
    killed.kill()
    killed.wait(5)
    assert files_holding(marker, runtime, tmpdir), "a killed process cleans up nothing"

    restarted = cluster.start_monitor(kubeconfig=kubeconfig, wrap=env)
    wait_for(lambda: "API reachable" in cluster.log(restarted), timeout=15, what="the restarted monitor")
    assert len(files_holding(marker, runtime, tmpdir)) == 1, "the killed run's copy is still there"
    restarted.send_signal(signal.SIGTERM)
    assert restarted.wait(5) == 0
    assert files_holding(marker, runtime, tmpdir) == []


# -- every read is bounded and never blocks ---------------------------------------------------------------


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _huge(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.truncate(size)  # sparse: costs no disk
    return path


def _referencing(sim: KubeSim, tmp_path: Path, *, ca: Path | None = None, key: Path | None = None) -> Path:
    pair = sim.client_cert(user="monitor")
    return write_kubeconfig(
        tmp_path / "kc",
        server=sim.url,
        ca_cert=ca or sim.ca.cert,
        client_cert_file=pair.cert,
        client_key_file=key or pair.key,
    )


def _token_file_kubeconfig(sim: KubeSim, tmp_path: Path, token_file: Path) -> Path:
    kubeconfig = write_kubeconfig(tmp_path / "kc", server=sim.url, ca_cert=sim.ca.cert)
    doc = json.loads(kubeconfig.read_text())
    doc["users"][0]["user"] = {"tokenFile": str(token_file)}
    kubeconfig.write_text(json.dumps(doc))
    return kubeconfig


BAD_FILES = {
    "kubeconfig is a FIFO": lambda sim, tmp: (
        _fifo(tmp / "kc"),
        "kubeconfig {p} is a FIFO, not a regular file",
    ),
    "kubeconfig is a directory": lambda sim, tmp: (tmp, "kubeconfig {p} is a directory, not a regular file"),
    "kubeconfig is huge": lambda sim, tmp: (
        _huge(tmp / "kc", 64 << 20),
        "kubeconfig {p} is 64 MiB, larger than the 4 MiB accepted",
    ),
    "client key is a FIFO": lambda sim, tmp: (
        _referencing(sim, tmp, key=_fifo(tmp / "key.pem")),
        "kubeconfig {p}: client-key " + str(tmp / "key.pem") + " is a FIFO, not a regular file",
    ),
    "CA is a device": lambda sim, tmp: (
        _referencing(sim, tmp, ca=Path("/dev/zero")),
        "kubeconfig {p}: certificate-authority /dev/zero is a character device, not a regular file",
    ),
    "client key is huge": lambda sim, tmp: (
        _referencing(sim, tmp, key=_huge(tmp / "key.pem", 2 << 20)),
        "kubeconfig {p}: client-key " + str(tmp / "key.pem") + " is 2 MiB, larger than the 1 MiB accepted",
    ),
    "token file is a FIFO": lambda sim, tmp: (
        _token_file_kubeconfig(sim, tmp, _fifo(tmp / "token")),
        "kubeconfig {p}: tokenFile " + str(tmp / "token") + " is a FIFO, not a regular file",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_credential_file_that_is_not_a_small_regular_file_is_an_error_naming_it(
    sim: KubeSim, tmp_path: Path, case: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    kubeconfig, message = BAD_FILES[case](sim, work)
    rec = Recorder()
    with running_watcher(kubeconfig=kubeconfig, recorder=rec, secrets_dir=tmp_path / "secrets"):
        status = first_error(rec)
    assert status.error == message.format(p=kubeconfig)
    assert sim.request_count() == 0
    assert rec.snapshots() == []


def test_a_list_that_never_finishes_arriving_meets_a_deadline_and_is_retried(
    sim: KubeSim, tmp_path: Path
) -> None:
    sim.trickle()
    rec = Recorder()
    limits = Limits(list_seconds=1.0)
    with running_watcher(kubeconfig=sim.write_kubeconfig(tmp_path / "kc"), recorder=rec, limits=limits):
        status = first_error(rec)
        assert status.error == f"{sim.url}: /api/v1/nodes: the answer did not finish within 1 s"
        sim.clear_faults()
        rec.wait_names({"m0", "m1"}, timeout=10)


def test_the_credential_files_listed_for_watching_are_read_bounded(tmp_path: Path) -> None:
    from monitor.adapters.kube.client import credential_files

    fifo = _fifo(tmp_path / "kc")
    done: list[list[Path]] = []
    reader = threading.Thread(target=lambda: done.append(credential_files(fifo)), daemon=True)
    reader.start()
    reader.join(5)
    assert done == [[fifo]]
