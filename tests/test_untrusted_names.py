"""Names from the API never become configuration: the `monitor` process against the simulated API and HAProxy."""

from __future__ import annotations

import pytest

from tests.test_e2e import ADDRESSES, MASTER, Cluster, cluster, wait_for

pytestmark = pytest.mark.haproxy
__all__ = ["cluster"]  # the fixture, shared with test_e2e

REFUSED = "not a DNS-1123 subdomain; skipped"


def _change_reaches_haproxy(cluster: Cluster) -> None:
    """A legitimate change made after the hostile node: it must be served, so nothing froze."""
    cluster.sim.update_node("master-1", addresses=[("InternalIP", "127.0.0.21")])
    wait_for(
        lambda: cluster.served() == {**ADDRESSES, "master-1": "127.0.0.21"},
        timeout=15,
        what="a later change served",
    )


def test_a_node_name_carrying_global_and_program_sections_is_skipped_and_runs_nothing(cluster: Cluster):
    cluster.lab.start_handler()
    proc = cluster.start_monitor()
    wait_for(lambda: cluster.served() == ADDRESSES, timeout=15, what="the first config")
    pwned = cluster.tmp / "pwned"
    # Valid to `haproxy -c` once spliced into `server NAME ADDRESS:PORT`, and the master-worker HAProxy of the
    # reload handler would run the command at its next reload.
    evil = f"evil 127.0.0.1:1\nglobal\n  master-worker\nprogram x\n  command /bin/touch {pwned}"
    cluster.sim.add_node(evil, labels=MASTER, addresses=[("InternalIP", "127.0.0.99")])
    wait_for(lambda: REFUSED in cluster.log(proc), timeout=15, what="the hostile node refused")
    _change_reaches_haproxy(cluster)
    text = cluster.lab.cfg_path.read_text()
    assert "program" not in text and "evil" not in text and "127.0.0.99" not in text
    assert not pwned.exists()
    refusals = [line for line in cluster.log(proc).splitlines() if REFUSED in line]
    assert len(refusals) == 1, "one warning, however often discovery runs again"
    assert "'evil 127.0.0.1:1\\nglobal\\n" in refusals[0], "names the node, quoted on one line"
    assert proc.poll() is None


def test_a_node_name_with_a_space_is_skipped_and_later_changes_still_reach_haproxy(cluster: Cluster):
    cluster.lab.start_handler()
    proc = cluster.start_monitor()
    wait_for(lambda: cluster.served() == ADDRESSES, timeout=15, what="the first config")
    cluster.sim.add_node("bad name", labels=MASTER, addresses=[("InternalIP", "127.0.0.14")])
    wait_for(lambda: REFUSED in cluster.log(proc), timeout=15, what="the node refused")
    _change_reaches_haproxy(cluster)
    assert "rejected" not in cluster.log(proc), "HAProxy never saw the name"
    assert proc.poll() is None
