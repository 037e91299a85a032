"""nftables adapter: reads our tables with ``nft -j``, applies each plan as one ``nft -f -`` transaction."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence

from monitor.adapters.nfnotify import RulesetWatch
from monitor.ports import SteeringResult
from monitor.steering.listing import (
    Listing,
    RulesetError,
    listed_tables,
    needs_iptables_comments,
    our_rules,
    parse_iptables_save,
    parse_listing,
)
from monitor.steering.plan import plan, sweep_tables
from monitor.steering.rules import FAMILIES, Family, SteeringSpec, desired_rules, vip_families


class _NftError(Exception):
    """A one-line, user-facing reason why nft could not be run or refused our input."""


class NftSteering:
    """Keeps the steering rules of ``spec`` installed (ensure) or absent (remove); never raises to callers.

    The first ensure/remove also sweeps up what earlier monitors left (see ``monitor.steering.plan``); it
    is repeated until one succeeds. After that a cycle reads only the VIP families' tables: one
    ``nft -j list table`` per family, and one ``nft -f -`` only when something must change. Once a cycle
    found the tables as wanted, the next ones with the same aim run no nft at all until the kernel reports
    a change to those tables (``monitor.adapters.nfnotify``): a rule deleted by someone else is still
    repaired by the next cycle, and an idle host is not read every check interval.
    """

    def __init__(
        self,
        *,
        spec: SteeringSpec,
        nft_bin: str = "nft",
        timeout: float = 5.0,
        netns: str | None = None,
        iptables_save: Mapping[Family, Sequence[str]] | None = None,
    ) -> None:
        self._spec = spec
        self._nft_bin = nft_bin
        self._timeout = timeout
        self._netns = netns
        # iptables-nft's own dump is the only place the text of an iptables-era ``-m comment`` shows.
        self._iptables_save = iptables_save or {
            "ip": ("iptables-nft-save", "iptables-save"),
            "ip6": ("ip6tables-nft-save", "ip6tables-save"),
        }
        # Validates the VIPs once, so a typo fails at start-up rather than on the first healthy check.
        self._desired = desired_rules(spec)
        self._families = vip_families(spec)
        self._swept = False
        # The last cycle that found (or made) the ruleset as wanted: (steer, our rule count). While the
        # kernel reports no change to our tables, a cycle with the same aim would find the same again.
        self._settled: tuple[bool, int] | None = None
        self._watch: RulesetWatch | None = None
        self._watch_tried = False

    @property
    def spec(self) -> SteeringSpec:
        return self._spec

    def _argv(self, binary: str, *args: str) -> list[str]:
        prefix = ["ip", "netns", "exec", self._netns] if self._netns else []
        return [*prefix, binary, *args]

    def _run(
        self, *args: str, stdin: str | None = None, binary: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        binary = binary or self._nft_bin
        if shutil.which(binary) is None:
            raise _NftError(
                f"nftables: {binary!r} not found on PATH (install nftables or pass --no-steering)"
            )
        try:
            return subprocess.run(
                self._argv(binary, *args),
                input=stdin,
                capture_output=True,
                # Comments and names in a ruleset are any bytes another tool put there.
                encoding="utf-8",
                errors="replace",
                timeout=self._timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise _NftError(
                f"nftables: '{binary} {' '.join(args)}' timed out after {self._timeout}s"
            ) from exc
        except OSError as exc:
            raise _NftError(f"nftables: cannot run {binary!r}: {exc.strerror or exc}") from exc

    @staticmethod
    def _first_error_line(stderr: str) -> str:
        for line in stderr.splitlines():
            if line.strip():
                return line.strip()
        return "no error message"

    def _list_table(self, family: str, table: str) -> str:
        """``nft -j list table`` output, or "" when that table does not exist."""
        done = self._run("-j", "list", "table", family, table)
        if done.returncode == 0:
            return done.stdout
        if "No such file or directory" in done.stderr:
            return ""
        raise _NftError(
            f"nftables: listing table {family} {table} failed: {self._first_error_line(done.stderr)}"
        )

    def _read(self, *, sweep: bool) -> Listing:
        if sweep:
            done = self._run("-j", "list", "tables")
            if done.returncode != 0:
                raise _NftError(f"nftables: listing tables failed: {self._first_error_line(done.stderr)}")
            present = listed_tables(done.stdout)
            tables = [t for t in sweep_tables(self._spec) if t in present]
        else:
            tables = [(family, self._spec.table) for family in self._families]
        return parse_listing(*(self._list_table(family, table) for family, table in tables))

    def _iptables_comments(
        self, listing: Listing
    ) -> tuple[dict[Family, dict[str, list[str | None]]], str | None]:
        """The comments of iptables-era rules, read only when a nat table holds commented rules."""
        found: dict[Family, dict[str, list[str | None]]] = {}
        problems: list[str] = []
        for family in FAMILIES:
            if not needs_iptables_comments(listing, family):
                continue
            tools = list(self._iptables_save[family])
            tool = next((t for t in tools if shutil.which(t)), None)
            if tool is None:
                problems.append(f"{' or '.join(tools)} not found on PATH")
                continue
            try:
                done = self._run("-t", "nat", binary=tool)
            except _NftError as exc:
                problems.append(str(exc).removeprefix("nftables: "))
                continue
            if done.returncode != 0 or "(nf_tables)" not in done.stdout:
                # A legacy (x_tables) iptables-save shows other rules than nft's ip nat table.
                why = self._first_error_line(done.stderr) if done.returncode else "not the nf_tables variant"
                problems.append(f"{tool}: {why}")
                continue
            found[family] = parse_iptables_save(done.stdout)
        warning = None
        if problems:
            warning = (
                "nftables: iptables-era rules with comments in ip/ip6 nat were left alone, their comments "
                f"cannot be read ({'; '.join(problems)}); install iptables (nf_tables variant) to remove them"
            )
        return found, warning

    def _run_transaction(self, script: str) -> None:
        """Apply a plan's script as one ``nft -f -`` transaction: all of it or nothing."""
        done = self._run("-f", "-", stdin=script)
        if done.returncode != 0:
            raise _NftError(
                f"nftables: applying to table {self._spec.table} failed: {self._first_error_line(done.stderr)}"
            )

    def _cycle_once(self, *, steer: bool) -> SteeringResult:
        sweep = not self._swept
        listing = self._read(sweep=sweep)
        comments, warning = self._iptables_comments(listing) if sweep else ({}, None)
        result = plan(listing, self._spec, steer=steer, sweep=sweep, iptables_comments=comments)
        if result.script is not None:
            self._run_transaction(result.script)
        self._swept = True
        if result.script is None:
            rules = sum(len(our_rules(listing, self._spec, f)) for f in self._families)
        else:
            rules = len(self._desired) if steer else 0
        return SteeringResult(
            changed=result.script is not None,
            error=None,
            rules=rules,
            leftovers=result.leftovers,
            warning=warning,
        )

    def _unchanged_since_settled(self, *, steer: bool) -> bool:
        """Whether the kernel reported no change to our tables since the last cycle with this aim settled.

        Always drains the notifications first, so that those about the listing this cycle is about to make
        are not counted again next time. Inside another namespace (``netns``) nothing is known: list.
        """
        if not self._watch_tried and self._netns is None:
            self._watch_tried = True
            try:
                self._watch = RulesetWatch(tables=[(family, self._spec.table) for family in self._families])
            except OSError:
                self._watch = None  # no netlink here: every cycle lists, as before
        if self._watch is None:
            return False
        changed = self._watch.changed()
        return not changed and self._settled is not None and self._settled[0] == steer

    def _cycle(self, *, steer: bool) -> SteeringResult:
        if self._unchanged_since_settled(steer=steer) and self._settled is not None:
            return SteeringResult(changed=False, error=None, rules=self._settled[1])
        self._settled = None
        try:
            try:
                result = self._cycle_once(steer=steer)
            except _NftError:
                # A rule deleted by someone else between our read and our write makes the whole
                # transaction fail on its stale handle: read again and retry once.
                result = self._cycle_once(steer=steer)
        except (_NftError, RulesetError) as exc:
            return SteeringResult(changed=False, error=str(exc), rules=self._count_quietly())
        self._settled = (steer, result.rules)
        return result

    def ensure(self) -> SteeringResult:
        """Install missing rules and delete duplicates/strays, in one transaction; idempotent."""
        return self._cycle(steer=True)

    def remove(self) -> SteeringResult:
        """Delete our rules, and our chains/tables when they hold nothing else."""
        return self._cycle(steer=False)

    def _count_quietly(self) -> int:
        try:
            listing = self._read(sweep=False)
        except (_NftError, RulesetError):
            return 0
        return sum(len(our_rules(listing, self._spec, f)) for f in self._families)
