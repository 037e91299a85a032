"""Credentials from a kubeconfig: bounded reads of it and of the files it names, and a private directory for them.

TLS (ssl, urllib3) reads the CA, client certificate and key from paths, and does so again for every new
connection. So every such file is read here once, bounded and without blocking, and written into a
private directory that no one else can swap: a FIFO, a device or a huge file can then stall or bloat
nothing but this one bounded read, which names the path. The directory (mode 0700) is removed at exit and,
for a run that was killed, when the next one starts.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import copy
import fcntl
import os
import shutil
import stat
import tempfile
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from monitor import boundedread
from monitor.adapters.kube.errors import ConfigError, Interrupted

KUBECONFIG_MAX_BYTES = 4 * 1024 * 1024
CREDENTIAL_FILE_MAX_BYTES = 1024 * 1024

# (kubeconfig key in its file form, the name of its copy in the private directory); KEY-data is the embedded form.
_CLUSTER_FILES = (("certificate-authority", "ca.crt"),)
_USER_FILES = (("client-certificate", "client.crt"), ("client-key", "client.key"))


def read_bounded(path: Path, *, limit: int, what: str) -> bytes:
    """The bytes of the regular file *path*, at most *limit* of them; never blocks on a FIFO or a device.

    The product's one bounded reader, with its refusals turned into a ConfigError naming *what* and the path.
    """
    try:
        return boundedread.read_bounded(path, limit=limit)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except boundedread.RefusedFile as exc:
        raise ConfigError(f"{what} {path} {exc.strerror}") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from None


def load_kubeconfig(path: Path) -> dict[str, Any]:
    """The kubeconfig document, read bounded; raises ConfigError naming the file."""
    data = read_bounded(path, limit=KUBECONFIG_MAX_BYTES, what="kubeconfig")
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"kubeconfig {path}: not valid YAML{where}") from None
    if not isinstance(doc, dict):
        raise ConfigError(
            f"kubeconfig {path}: not a kubeconfig (expected a mapping with clusters, users, contexts)"
        )
    return doc


@dataclass(frozen=True)
class Resolved:
    """A kubeconfig whose current context names no file and embeds no key: they are in *files*, by name.

    The document is only to be handed to the loader, after place() (once) has put in the paths.
    """

    doc: dict[str, Any]
    files: dict[str, bytes]
    # (section in the document, file name): where place() puts the path of each of *files*.
    slots: tuple[tuple[dict[str, Any], str, str], ...] = ()

    def place(self, directory: Path) -> dict[str, Any]:
        """The document with each file of *files* named by its path in *directory* (where they were written)."""
        for section, key, name in self.slots:
            section[key] = str(directory / name)
        return self.doc


def resolve(doc: Mapping[str, Any], *, kubeconfig: Path) -> Resolved:
    """Read every file the current context names (and decode every *-data) so that the loader reads nothing.

    The CA, client certificate and key come back as *files*, to be written privately and placed; a
    tokenFile becomes the token it holds. Entries the current context does not use are left alone.
    Precedence follows the official loader: the -data form wins over the file form, a token over a tokenFile.
    """
    resolved = copy.deepcopy(dict(doc))
    context = _named(resolved.get("contexts"), resolved.get("current-context")).get("context")
    if not isinstance(context, dict):
        return Resolved(doc=resolved, files={})
    base = kubeconfig.parent
    files: dict[str, bytes] = {}
    slots: list[tuple[dict[str, Any], str, str]] = []
    cluster = _named(resolved.get("clusters"), context.get("cluster")).get("cluster")
    user = _named(resolved.get("users"), context.get("user")).get("user")
    for section, keys in ((cluster, _CLUSTER_FILES), (user, _USER_FILES)):
        if not isinstance(section, dict):
            continue
        for key, name in keys:
            content = _content(section, key, base=base, kubeconfig=kubeconfig)
            if content is not None:
                files[name] = content
                section.pop(f"{key}-data", None)
                slots.append((section, key, name))
    if isinstance(user, dict) and not user.get("token") and user.get("tokenFile"):
        path = _path(user["tokenFile"], base=base, key="tokenFile", kubeconfig=kubeconfig)
        raw = read_bounded(path, limit=CREDENTIAL_FILE_MAX_BYTES, what=f"kubeconfig {kubeconfig}: tokenFile")
        try:
            user["token"] = raw.decode().strip()
        except UnicodeDecodeError:
            raise ConfigError(f"kubeconfig {kubeconfig}: tokenFile {path} is not text") from None
        del user["tokenFile"]
    return Resolved(doc=resolved, files=files, slots=tuple(slots))


def _content(section: Mapping[str, Any], key: str, *, base: Path, kubeconfig: Path) -> bytes | None:
    data = section.get(f"{key}-data")
    if data:
        if not isinstance(data, str):
            raise ConfigError(f"kubeconfig {kubeconfig}: {key}-data is not a string")
        try:
            return base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError):
            raise ConfigError(f"kubeconfig {kubeconfig}: {key}-data is not base64") from None
    if section.get(key):
        path = _path(section[key], base=base, key=key, kubeconfig=kubeconfig)
        return read_bounded(path, limit=CREDENTIAL_FILE_MAX_BYTES, what=f"kubeconfig {kubeconfig}: {key}")
    return None


def _path(value: Any, *, base: Path, key: str, kubeconfig: Path) -> Path:
    if not isinstance(value, str):
        raise ConfigError(f"kubeconfig {kubeconfig}: {key} is not a path")
    path = Path(value)
    return path if path.is_absolute() else base / path


def _named(entries: Any, name: Any) -> dict[str, Any]:
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    return {}


def default_secrets_root() -> Path:
    """$XDG_RUNTIME_DIR when set (a per-user tmpfs), else the system temp directory ($TMPDIR, /tmp)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) if runtime else Path(tempfile.gettempdir())


class SecretDir:
    """ROOT/haproxy-monitor-UID/: one run-ID/ directory per running monitor, each guarded by run-ID.lock.

    A run holds an flock() on its lock file for its whole life; the kernel drops it when the process dies,
    however it dies. So a lock that can be taken marks a killed run, whose directory sweep() removes.
    Thread-safe.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_secrets_root()
        self.base = self.root / f"haproxy-monitor-{os.getuid()}"
        self._lock = threading.Lock()
        self._run: Path | None = None
        self._run_lock: int | None = None
        self._closed = False

    def sweep(self) -> None:
        """Remove what killed runs left behind (nothing when the directory does not exist yet)."""
        if not self.base.is_dir():
            return
        with self._lock, self._base_locked():
            self._sweep()

    def write(self, files: Mapping[str, bytes]) -> Path:
        """A new directory (mode 0700) holding *files* (mode 0600); raises Interrupted once closed."""
        with self._lock:
            if self._closed:
                raise Interrupted()
            try:
                run = self._run or self._open()
                directory = Path(tempfile.mkdtemp(prefix="credentials-", dir=run))
                for name, content in files.items():
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                    with os.fdopen(os.open(directory / name, flags, 0o600), "wb") as out:
                        out.write(content)
            except OSError as exc:
                raise ConfigError(f"credentials directory {self.base}: {exc.strerror or exc}") from None
            return directory

    def discard(self, directory: Path) -> None:
        """Remove a directory write() returned (its credentials are no longer used)."""
        with self._lock:
            if self._run is not None and directory.parent == self._run:
                shutil.rmtree(directory, ignore_errors=True)

    def close(self) -> None:
        """Remove this run's directory; later writes raise Interrupted."""
        with self._lock:
            self._closed = True
            run, self._run = self._run, None
            lock, self._run_lock = self._run_lock, None
            if run is not None:
                shutil.rmtree(run, ignore_errors=True)
                with contextlib.suppress(OSError):
                    os.unlink(run.with_suffix(".lock"))
            if lock is not None:
                os.close(lock)
        atexit.unregister(self.close)

    # -- internals (self._lock held) ---------------------------------------------------------------------

    def _open(self) -> Path:
        self._make_base()
        with self._base_locked():
            self._sweep()
            run = self.base / f"run-{uuid.uuid4().hex[:12]}"
            fd = os.open(run.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            run.mkdir(mode=0o700)
        self._run, self._run_lock = run, fd
        # A normal exit that skips close() (an exception in the main thread) still removes the files.
        atexit.register(self.close)
        return run

    def _make_base(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            self.base.mkdir(mode=0o700)
        st = os.lstat(self.base)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise ConfigError(
                f"credentials directory {self.base} is not a directory owned by uid {os.getuid()}: "
                "remove it, or set XDG_RUNTIME_DIR to a private directory"
            )
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(self.base, 0o700)

    @contextlib.contextmanager
    def _base_locked(self) -> Any:
        # Serialises sweeps and run creation between monitors: a run is never swept between lock and mkdir.
        fd = os.open(self.base / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _sweep(self) -> None:
        for entry in self.base.iterdir():
            if entry.name.startswith("run-") and entry.suffix == ".lock":
                if entry.with_suffix("") == self._run or not _abandoned(entry):
                    continue
                shutil.rmtree(entry.with_suffix(""), ignore_errors=True)
                with contextlib.suppress(OSError):
                    entry.unlink()
            elif entry.name.startswith("run-") and not entry.with_suffix(".lock").exists():
                # Its lock file is gone: the rest of a removal that a kill interrupted.
                shutil.rmtree(entry, ignore_errors=True)


def _abandoned(lock_file: Path) -> bool:
    """Whether no living process holds *lock_file*."""
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops the lock taken just now, if any
    return True
