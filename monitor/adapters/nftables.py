"""nftables adapter: reads our table with ``nft -j``, applies plans as one ``nft -f -`` transaction."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from monitor.steering import (
    Rule,
    RulesetError,
    SteeringSpec,
    desired_rules,
    parse_ruleset,
    parse_table,
    plan,
    plan_removal,
)


@dataclass(frozen=True)
class SteeringResult:
    """Outcome of one ensure/remove: did nft change anything, a one-line error, our rule count after."""

    changed: bool
    error: str | None
    rules: int


@dataclass(frozen=True)
class SteeringState:
    """Our rules as currently installed, and whether that equals the desired set."""

    rules: tuple[Rule, ...]
    in_sync: bool
    error: str | None = None


class _NftError(Exception):
    """A one-line, user-facing reason why nft could not be run or refused our input."""


class NftSteering:
    """Keeps the steering rules of ``spec`` installed (ensure) or absent (remove); never raises to callers."""

    def __init__(
        self,
        *,
        spec: SteeringSpec,
        nft_bin: str = "nft",
        timeout: float = 5.0,
        netns: str | None = None,
    ) -> None:
        self._spec = spec
        self._nft_bin = nft_bin
        self._timeout = timeout
        self._netns = netns
        # Validates the VIPs once, so a typo fails at start-up rather than on the first healthy check.
        self._desired = desired_rules(spec)

    @property
    def spec(self) -> SteeringSpec:
        return self._spec

    def _argv(self, *args: str) -> list[str]:
        prefix = ["ip", "netns", "exec", self._netns] if self._netns else []
        return [*prefix, self._nft_bin, *args]

    def _run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        if shutil.which(self._nft_bin) is None:
            raise _NftError(
                f"nftables: {self._nft_bin!r} not found on PATH (install nftables or pass --no-steering)"
            )
        try:
            return subprocess.run(
                self._argv(*args),
                input=stdin,
                capture_output=True,
                text=True,
                timeout=self._timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise _NftError(
                f"nftables: '{self._nft_bin} {' '.join(args)}' timed out after {self._timeout}s"
            ) from exc
        except OSError as exc:
            raise _NftError(f"nftables: cannot run {self._nft_bin!r}: {exc.strerror or exc}") from exc

    @staticmethod
    def _first_error_line(stderr: str) -> str:
        for line in stderr.splitlines():
            if line.strip():
                return line.strip()
        return "no error message"

    def _read(self) -> str:
        """``nft -j list table`` output, or "" when our table does not exist."""
        done = self._run("-j", "list", "table", "inet", self._spec.table)
        if done.returncode == 0:
            return done.stdout
        if "No such file or directory" in done.stderr:
            return ""
        raise _NftError(
            f"nftables: listing table inet {self._spec.table} failed: {self._first_error_line(done.stderr)}"
        )

    def _apply(self, script: str) -> None:
        done = self._run("-f", "-", stdin=script)
        if done.returncode != 0:
            raise _NftError(
                f"nftables: applying to table inet {self._spec.table} failed: "
                f"{self._first_error_line(done.stderr)}"
            )

    def _ensure_once(self) -> SteeringResult:
        text = self._read()
        current = parse_ruleset(text, self._spec)
        script = plan(
            current, self._desired, self._spec, existing_chains=parse_table(text, self._spec).chains
        )
        if script is None:
            return SteeringResult(changed=False, error=None, rules=len(current))
        self._apply(script)
        return SteeringResult(changed=True, error=None, rules=len(self._desired))

    def ensure(self) -> SteeringResult:
        """Install missing rules and delete duplicates/strays, in one transaction; idempotent."""
        try:
            try:
                return self._ensure_once()
            except _NftError:
                # A rule deleted by someone else between our read and our write makes the whole
                # transaction fail on its stale handle: read again and retry once.
                return self._ensure_once()
        except (_NftError, RulesetError) as exc:
            return SteeringResult(changed=False, error=str(exc), rules=self._count_quietly())

    def remove(self) -> SteeringResult:
        """Delete our rules, and our chains/table when they hold nothing else."""
        try:
            try:
                return self._remove_once()
            except _NftError:
                return self._remove_once()
        except (_NftError, RulesetError) as exc:
            return SteeringResult(changed=False, error=str(exc), rules=self._count_quietly())

    def _remove_once(self) -> SteeringResult:
        script = plan_removal(self._read(), self._spec)
        if script is None:
            return SteeringResult(changed=False, error=None, rules=0)
        self._apply(script)
        return SteeringResult(changed=True, error=None, rules=0)

    def state(self) -> SteeringState:
        """Our installed rules and whether they match the desired set (for /readyz and metrics)."""
        try:
            current = parse_ruleset(self._read(), self._spec)
        except (_NftError, RulesetError) as exc:
            return SteeringState(rules=(), in_sync=False, error=str(exc))
        in_sync = plan(current, self._desired, self._spec) is None
        return SteeringState(rules=tuple(current), in_sync=in_sync)

    def _count_quietly(self) -> int:
        try:
            return len(parse_ruleset(self._read(), self._spec))
        except (_NftError, RulesetError):
            return 0
