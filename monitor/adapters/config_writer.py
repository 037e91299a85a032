"""The config writer: the live haproxy.cfg replaced by a staged file HAProxy validated, fsynced, renamed atomically."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

# The errors belong to the port (the loop's pipeline catches them); raised here, and importable from here.
from monitor.ports import ValidationError, WriteError

__all__ = ["ConfigWriter", "ValidationError", "WriteError", "find_haproxy"]


def find_haproxy(explicit: str | None) -> str | None:
    """The HAProxy binary used for validation: the one given, else ``haproxy`` on PATH, else None (no check)."""
    if explicit:
        return explicit
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None
    )


def _first_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for marker in ("[ALERT]", "[ERR]", "error"):
        for line in lines:
            if marker in line:
                return line
    return lines[0] if lines else "no output"


class ConfigWriter:
    """Replaces ``cfg`` only with bytes that differ, passed ``haproxy -c``, and reached the disk."""

    def __init__(self, *, cfg: Path, haproxy_bin: str | None, validate_timeout: float = 15.0) -> None:
        self.cfg = cfg
        self.haproxy_bin = haproxy_bin
        self.validate_timeout = validate_timeout

    def current(self) -> bytes | None:
        try:
            return self.cfg.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise WriteError(f"{self.cfg}: cannot read the live config: {exc.strerror or exc}") from None

    def write(self, text: str, *, mode: int = 0o644) -> bool:
        """Install ``text`` as the live config; False when it is already byte-identical (nothing done).

        On any failure the live file is untouched and WriteError says why.
        """
        try:
            # A Go template writes bytes: "\xff" in one reaches the file as that byte, as with the reference.
            data = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise WriteError(
                f"{self.cfg}: the rendered config holds a character UTF-8 cannot encode "
                f"({exc.object[exc.start]!r} at offset {exc.start})"
            ) from None
        if self.current() == data:
            return False
        directory = self.cfg.parent
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{self.cfg.name}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise WriteError(self._describe(exc, f"cannot create a temporary file in {directory}")) from None
        tmp = Path(tmp_name)
        try:
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fchmod(fh.fileno(), mode)
                    os.fsync(fh.fileno())
            except OSError as exc:
                raise WriteError(self._describe(exc, f"cannot write {tmp}")) from None
            self._validate(tmp)
            try:
                os.replace(tmp, self.cfg)
            except OSError as exc:
                raise WriteError(
                    self._describe(exc, f"cannot rename {tmp.name} over {self.cfg.name}")
                ) from None
            self._fsync_dir(directory)
        finally:
            with contextlib.suppress(FileNotFoundError, OSError):
                tmp.unlink()
        return True

    def _validate(self, path: Path) -> None:
        if not self.haproxy_bin:
            return
        try:
            proc = subprocess.run(
                [self.haproxy_bin, "-c", "-f", str(path)],
                capture_output=True,
                # HAProxy quotes the config's bytes in its messages: whatever they are, they must not crash us.
                encoding="utf-8",
                errors="replace",
                timeout=self.validate_timeout,
                check=False,
            )
        except FileNotFoundError:
            raise WriteError(
                f"{self.cfg}: validation binary {self.haproxy_bin!r} not found (see --haproxy-bin)"
            ) from None
        except subprocess.TimeoutExpired:
            raise WriteError(
                f"{self.cfg}: '{self.haproxy_bin} -c' did not finish in {self.validate_timeout}s"
            ) from None
        if proc.returncode != 0:
            detail = _first_error(proc.stdout + "\n" + proc.stderr).replace(str(path), str(self.cfg))
            raise ValidationError(f"{self.cfg}: HAProxy rejected the rendered config: {detail}")

    def _describe(self, exc: OSError, what: str) -> str:
        reason = {
            errno.ENOSPC: "no space left on device",
            errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system",
            errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        return f"{self.cfg}: {what}: {reason}"

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        # The rename is durable only once the directory entry is on disk.
        try:
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)
