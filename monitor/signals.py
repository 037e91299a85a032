"""Which signals stop the monitor, with which exit code, and how a stop pre-empts whatever the main thread does."""

from __future__ import annotations

import faulthandler
import signal
from types import FrameType

# Orderly stops: what kubelet, systemd and Ctrl-C send. Exit 0, as the reference does.
CLEAN = frozenset({signal.SIGTERM, signal.SIGINT})
# Every other signal whose default action ends the process, and that a process may catch: the monitor stops
# as for SIGTERM (steering rules removed first) but exits 128+N, the code a shell reports for death by N, so
# that a supervisor still sees that something unexpected stopped it.
UNEXPECTED = frozenset(
    {
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGALRM,
        signal.SIGVTALRM,
        signal.SIGPROF,
        signal.SIGXCPU,
        signal.SIGIO,
        signal.SIGPWR,
        signal.SIGSTKFLT,
    }
)
# A closed socket or pipe is an EPIPE error return; a write past the file-size limit is an EFBIG error, which
# the config writer reports and the loop retries like any failed write. Neither may end the process.
IGNORED = frozenset({signal.SIGPIPE, signal.SIGXFSZ})
# Left at their default action: SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS report a fault of
# the interpreter itself (a Python handler would run only after the faulting instruction repeated), so they
# dump the Python stacks (faulthandler) and end the process; the next start removes the rules at its first
# health check. SIGKILL and SIGSTOP cannot be caught.
EXIT_INTERNAL_ERROR = 70  # sysexits' EX_SOFTWARE: the loop could not go on (rules removed first)


def stop_signals() -> tuple[int, ...]:
    """The signal numbers that stop the monitor cleanly: the named ones and every real-time signal."""
    realtime = range(signal.SIGRTMIN, signal.SIGRTMAX + 1)
    return tuple(sorted({*CLEAN, *UNEXPECTED, *realtime}))


def signal_name(signum: int) -> str:
    """``SIGTERM``, or ``SIGRTMIN+3`` for a real-time signal (which the Signals enum does not name)."""
    if signal.SIGRTMIN < signum < signal.SIGRTMAX:
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}"
    return signal.Signals(signum).name


def exit_code(signum: int) -> int:
    """0 for SIGTERM and SIGINT, 128+N for any other stop signal N."""
    return 0 if signum in CLEAN else 128 + signum


class Stopping(BaseException):
    """Raised in the main thread by the first stop signal: it abandons the work in hand wherever it is.

    A BaseException, so that no ``except Exception`` on the way (the loop's guard among them) can swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum
        self.name = signal_name(signum)
        self.code = exit_code(signum)


class StopSignals:
    """The process's stop signals. The first raises Stopping in the main thread; later ones are only recorded,
    so that the cleanup the first one started (steering rules removed) runs to its end.

    Raising rather than queueing a Stop event lets a stop pre-empt whatever the main thread is doing: start-up
    (imports, adapters, the template) before the loop exists, or a step of the loop such as a ``haproxy -c`` of
    a 5,000-server config (1.5 s), whose child process ``subprocess.run`` kills on the way out.
    """

    def __init__(self) -> None:
        self.first: int | None = None  # the signal that stopped the process
        self.count = 0

    @classmethod
    def install(cls) -> StopSignals:
        """Handle the stop signals and ignore IGNORED; idempotent (the signal table itself says who is in)."""
        owner = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
        if isinstance(owner, StopSignals):
            return owner
        stops = cls()
        # All or none: a signal arriving meanwhile waits until every handler is in, then raises as usual (the
        # caller installs inside the ``try`` that catches Stopping).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals())
        try:
            for ignored in IGNORED:
                signal.signal(ignored, signal.SIG_IGN)
            for signum in stop_signals():
                signal.signal(signum, stops._on_signal)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if not faulthandler.is_enabled():
            faulthandler.enable()  # a crash of the interpreter itself still shows where it happened
        return stops

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.count += 1
        if self.first is None:
            self.first = signum
            raise Stopping(signum)
