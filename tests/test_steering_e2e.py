"""Health → nftables steering end to end: the monitor process, real HAProxy and real nft, in a private netns.

The scenario (``tests/scenarios/steering.py``) runs once per module under ``unshare -n`` so this test
process's own namespace is never touched; each test asserts one behaviour on its JSON result.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI
from tests.netns import available

pytestmark = [pytest.mark.netns, pytest.mark.haproxy]

REPO = Path(__file__).resolve().parent.parent
VIP4, VIP6 = "192.0.2.10", "2001:db8::10"
EXPECTED_RULES = sorted([c, v] for c in ("ocp_output", "ocp_prerouting") for v in (VIP4, VIP6))
# Short cycles for the test; on and off differ so that mixing up the two thresholds shows.
INTERVAL, HEALTH_ON, HEALTH_OFF = 0.2, 3, 5
SCENARIO_TIMEOUT = 75.0
# Scheduling slack on a loaded 2-core CI machine, added to every upper bound.
SLACK = 1.5


def _unavailable() -> str | None:
    why = available()
    if why is not None:
        return why
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux)"
    done = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"'unshare -n' is not permitted here: {done.stderr.strip()}"
    return None


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM lets the scenario clean up after itself; SIGKILL its process group only if it does not."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)


@pytest.fixture(scope="module")
def scenario(haproxy_bin: str) -> Iterator[dict[str, Any]]:
    why = _unavailable()
    if why is not None:
        if IN_CI:
            pytest.fail(f"steering e2e must run in CI: {why}")
        pytest.skip(f"steering e2e: {why}")
    tag = f"{os.getpid()}{uuid.uuid4().hex[:6]}"
    argv = [
        "unshare", "-n", sys.executable, "-m", "tests.scenarios.steering", "--json", "--tag", tag,
        "--check-interval", f"{INTERVAL * 1000:g}ms",
        "--health-on", str(HEALTH_ON), "--health-off", str(HEALTH_OFF),
    ]  # fmt: skip
    # unshare execs the scenario in place, so proc.pid is the scenario and leads its own group.
    proc = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=SCENARIO_TIMEOUT)
    except subprocess.TimeoutExpired:
        _stop(proc)
        pytest.fail(f"the steering scenario did not finish within {SCENARIO_TIMEOUT:g}s")
    finally:
        leftover = Path("/run/netns") / f"hm-sc-{tag}"
        left_behind = leftover.exists()
        if left_behind:
            subprocess.run(["ip", "netns", "del", leftover.name], capture_output=True, check=False)
    lines = out.strip().splitlines()
    assert lines, f"the scenario printed nothing (exit {proc.returncode}); stderr:\n{err[-3000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    result["exit_code"] = proc.returncode
    result["netns_left_behind"] = left_behind
    result["stderr"] = err
    yield result


def step(result: dict[str, Any], name: str) -> dict[str, Any]:
    """One step's observations; fails with the scenario's error and log tails when the step did not run."""
    if name not in result:
        logs = "\n".join(f"--- {k}\n{v}" for k, v in result.get("logs", {}).items())
        pytest.fail(
            f"step {name!r} did not complete: {result.get('error')}\n{logs}\n{result['stderr'][-2000:]}"
        )
    got: dict[str, Any] = result[name]
    return got


def test_rules_for_both_vips_appear_only_after_health_on_good_checks(scenario: dict[str, Any]) -> None:
    install = step(scenario, "install")
    assert install["rules_before_start"] == 0
    assert install["rules_at_first_200"] == 0, "no rule may exist before HAProxy is healthy"
    assert install["rules"] == EXPECTED_RULES, "prerouting and output rules for the IPv4 and the IPv6 VIP"
    assert install["families"] == [["ip", VIP4], ["ip6", VIP6]], "each VIP's rules in its own family's table"
    took = install["healthy_to_rules_s"]
    # health_on samples are at least (health_on - 1) intervals apart after the first 200.
    assert (HEALTH_ON - 1) * INTERVAL - 0.1 <= took <= HEALTH_ON * INTERVAL + SLACK, took


def test_keepalived_check_passes_once_healthy_and_fails_while_unhealthy_and_after_sigterm(
    scenario: dict[str, Any],
) -> None:
    install = step(scenario, "install")
    assert install["check_at_first_200"] is False
    took = install["healthy_to_check_s"]
    assert (HEALTH_ON - 1) * INTERVAL - 0.1 <= took <= HEALTH_ON * INTERVAL + SLACK, took
    assert step(scenario, "unhealthy")["check_after"] is False
    assert step(scenario, "recovery")["healthy_to_check_s"] <= HEALTH_ON * INTERVAL + SLACK
    assert step(scenario, "sigterm")["check_after"] is False


def test_leftovers_of_earlier_monitors_are_gone_after_start_and_foreign_rules_kept(
    scenario: dict[str, Any], iptables_nft: str
) -> None:
    install = step(scenario, "install")
    before, after = install["leftovers_before"], install["leftovers_after"]
    assert before["inet_table"] is True and after["inet_table"] is False
    for family in ("ip", "ip6"):
        ours = [line for line in before[f"{family}_nat"] if "OCP_API_LB_REDIRECT" in line]
        assert len(ours) == 2, before
        assert after[f"{family}_nat"] == [line for line in before[f"{family}_nat"] if line not in ours]
        assert len(after[f"{family}_nat"]) == 2, "the foreign rules (no comment, another comment) stay"
    assert install["log_says_leftovers_removed"] is True


def test_client_and_local_connections_to_the_vip_api_port_go_through_haproxy(
    scenario: dict[str, Any],
) -> None:
    traffic = step(scenario, "traffic")
    # "200 ok" is the backend's answer through HAProxy; the API on the VIP itself answers "200 direct".
    assert traffic["client"] == ["200 ok", "200 ok"], "prerouting DNAT, IPv4 and IPv6"
    assert traffic["client_sessions_delta"] == 2, "HAProxy's frontend counted both client connections"
    assert traffic["local"] == ["200 ok", "200 ok"], 'output chain (oifname "lo") for the host\'s own traffic'
    assert traffic["local_sessions_delta"] == 2


def test_rules_deleted_behind_the_monitors_back_are_restored_by_the_next_cycle(
    scenario: dict[str, Any],
) -> None:
    deleted = step(scenario, "external_delete")
    assert sorted(deleted["deleted"]) == [["ocp_output", VIP6], ["ocp_prerouting", VIP4]]
    assert deleted["rules_after"] == 4
    assert deleted["restored_s"] <= INTERVAL + SLACK, deleted


def test_a_stopped_haproxy_removes_the_rules_after_health_off_bad_checks(scenario: dict[str, Any]) -> None:
    outage = step(scenario, "unhealthy")
    assert outage["health_ok_after_stop"] is False
    took = outage["unhealthy_to_removed_s"]
    assert (HEALTH_OFF - 1) * INTERVAL - 0.05 <= took <= HEALTH_OFF * INTERVAL + SLACK, took
    assert outage["table_exists_after"] is False, "an empty table of ours is removed with the rules"


def test_without_rules_clients_reach_the_api_on_the_vip_directly(scenario: dict[str, Any]) -> None:
    outage = step(scenario, "unhealthy")
    assert outage["client"] == ["200 direct", "200 direct"]
    assert outage["local"] == ["200 direct", "200 direct"]
    lb = outage["client_to_lb_port"]
    assert len(lb) == 1 and lb[0].startswith("error") and "refused" in lb[0], (
        "nothing listens on the LB port, so a still-steered connection would have failed"
    )


def test_haproxy_coming_back_brings_the_rules_back(scenario: dict[str, Any]) -> None:
    recovery = step(scenario, "recovery")
    assert recovery["monitor_running"] is True
    assert recovery["rules_at_first_200"] == 0
    assert (HEALTH_ON - 1) * INTERVAL - 0.1 <= recovery["healthy_to_rules_s"] <= HEALTH_ON * INTERVAL + SLACK
    assert recovery["client"] == ["200 ok"] and recovery["client_sessions_delta"] == 1


def test_sigterm_removes_the_rules_and_exits_zero(scenario: dict[str, Any]) -> None:
    sigterm = step(scenario, "sigterm")
    assert sigterm["exit_code"] == 0
    assert sigterm["sigterm_to_removed_s"] <= 1.0, sigterm
    assert sigterm["table_exists_after"] is False
    assert sigterm["log_says_removed"] is True
    assert sigterm["client_after"] == ["200 direct"]


def test_a_missing_nft_binary_keeps_the_monitor_running_and_not_ready_with_one_log_line(
    scenario: dict[str, Any],
) -> None:
    missing = step(scenario, "nft_missing")
    assert missing["running"] is True, "an nft failure must never end the monitor"
    assert missing["readyz_status"] == 503
    assert "/nonexistent/nft" in missing["readyz"]["steering"]
    assert missing["readyz"]["healthy"] is True, "HAProxy is healthy; only steering is broken"
    assert len(missing["log_lines"]) == 1, missing["log_lines"]
    assert "/nonexistent/nft" in missing["log_lines"][0] and "error" in missing["log_lines"][0]
    assert missing["exit_code"] == 0
    assert missing["table_exists"] is False


def test_the_scenario_finishes_cleanly_and_leaves_no_namespace_behind(scenario: dict[str, Any]) -> None:
    assert scenario["error"] is None, scenario.get("logs")
    assert scenario["exit_code"] == 0
    assert scenario["netns_left_behind"] is False
