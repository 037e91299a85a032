"""The config writer: the live haproxy.cfg replaced by a staged file HAProxy validated, fsynced, renamed atomically."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from monitor.boundedread import RefusedFile, read_bounded
from monitor.logs import Log

# The errors belong to the port (the loop's pipeline catches them); raised here, and importable from here.
from monitor.ports import ValidationError, WriteError

# Never on the written file, whatever the template's mode: setuid, setgid, sticky and world-writable.
FORBIDDEN_MODE_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWOTH
# tempfile.mkstemp's names: PREFIX + 8 characters of its alphabet + SUFFIX.
_TEMP_CHARS = "[a-z0-9_]{8}"


# Only a cap against a wrong path: a rendered config for thousands of servers is a few MiB at most.
MAX_CONFIG_BYTES = 64 * 1024 * 1024


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
    """Replaces ``cfg`` only with bytes that differ, passed ``haproxy -c``, and reached the disk.

    When ``cfg`` is a symlink the file it points to is replaced (temp file next to the target, renamed onto
    the target), so the link stays a link. Temp files an earlier, killed run left next to that file are
    removed when the writer is built.
    """

    def __init__(self, *, cfg: Path, haproxy_bin: str | None, validate_timeout: float = 15.0) -> None:
        self.cfg = cfg
        self.haproxy_bin = haproxy_bin
        self.validate_timeout = validate_timeout
        self._remove_stale_temp_files()

    def target(self) -> Path:
        """The file actually replaced: ``cfg``, or where its symlink(s) lead (resolved on every write)."""
        return Path(os.path.realpath(self.cfg))

    @staticmethod
    def _temp_prefix(target: Path) -> str:
        return f".{target.name}."

    def _remove_stale_temp_files(self) -> None:
        # Only names our own mkstemp call produces: a killed run (SIGKILL, OOM, power loss) leaves one behind,
        # and nothing else in the directory is ours to delete.
        target = self.target()
        pattern = re.compile(re.escape(self._temp_prefix(target)) + _TEMP_CHARS + re.escape(".tmp"))
        try:
            names = os.listdir(target.parent)
        except OSError:
            return  # a missing or unreadable directory shows up as a write error soon enough
        removed = []
        for name in sorted(names):
            if not pattern.fullmatch(name):
                continue
            path = target.parent / name
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.lstat(path).st_mode):
                    path.unlink()
                    removed.append(name)
        if removed:
            Log("write").info(
                "removed temp files left by an earlier run",
                directory=str(target.parent),
                files=",".join(removed),
            )

    def current(self, *, limit: int | None = None) -> bytes | None:
        """The live file's bytes, None when it does not exist; with ``limit``, None also when it is larger.

        Read without blocking (see read_bounded): a FIFO or device at the cfg path is a WriteError.
        """
        cap = limit if limit is not None else MAX_CONFIG_BYTES
        try:
            return read_bounded(self.cfg, limit=cap)
        except FileNotFoundError:
            return None
        except RefusedFile as exc:
            if exc.errno == errno.EFBIG and limit is not None:
                return None
            raise WriteError(f"{self.cfg}: cannot read the live config: {exc.strerror}") from None
        except OSError as exc:
            raise WriteError(f"{self.cfg}: cannot read the live config: {exc.strerror or exc}") from None

    def write(self, text: str, *, mode: int = 0o644) -> bool:
        """Install ``text`` as the live config; False when it is already byte-identical (nothing done).

        ``mode`` (the template's) loses the setuid, setgid, sticky and world-writable bits. On any failure the
        live file is untouched and WriteError says why.
        """
        try:
            # A Go template writes bytes: "\xff" in one reaches the file as that byte, as with the reference.
            data = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise WriteError(
                f"{self.cfg}: the rendered config holds a character UTF-8 cannot encode "
                f"({exc.object[exc.start]!r} at offset {exc.start})"
            ) from None
        # A live file longer than the new bytes differs from them: no need to read it whole.
        if self.current(limit=len(data)) == data:
            return False
        target = self.target()
        directory = target.parent
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=self._temp_prefix(target), suffix=".tmp", dir=directory)
        except OSError as exc:
            raise WriteError(self._describe(exc, f"cannot create a temporary file in {directory}")) from None
        tmp = Path(tmp_name)
        try:
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fchmod(fh.fileno(), mode & 0o7777 & ~FORBIDDEN_MODE_BITS)
                    os.fsync(fh.fileno())
            except OSError as exc:
                raise WriteError(self._describe(exc, f"cannot write {tmp}")) from None
            self._validate(tmp)
            try:
                os.replace(tmp, target)
            except OSError as exc:
                raise WriteError(self._describe(exc, f"cannot rename {tmp.name} over {target}")) from None
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
