"""The live haproxy.cfg is replaced only by validated, complete files; on any failure it stays byte-for-byte."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from monitor.adapters.config_writer import ConfigWriter, ValidationError, WriteError

GOOD = "global\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1s\n  timeout server 1s\n"
GOOD2 = GOOD + "listen x\n  bind 127.0.0.1:1\n  server a 127.0.0.1:2\n"
BAD = GOOD + "listen x\n  bogus_keyword here\n"


@pytest.fixture
def tmpfs(tmp_path: Path):
    """A tiny real file system we can fill up or make read-only (needs root, which CI has)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs: {proc.stderr!r}")
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_new_config_replaces_the_live_file_with_the_template_mode(tmp_path: Path, haproxy_bin: str):
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(GOOD)
    writer = ConfigWriter(cfg=cfg, haproxy_bin=haproxy_bin)
    assert writer.write(GOOD2, mode=0o640) is True
    assert cfg.read_text() == GOOD2
    assert cfg.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["haproxy.cfg"], "no temp file left behind"


def test_identical_bytes_are_not_written_again(tmp_path: Path):
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(GOOD)
    before = cfg.stat()
    assert ConfigWriter(cfg=cfg, haproxy_bin=None).write(GOOD) is False
    after = cfg.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_the_new_file_is_renamed_over_the_old_one_not_written_in_place(tmp_path: Path):
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(GOOD)
    old_inode = cfg.stat().st_ino
    ConfigWriter(cfg=cfg, haproxy_bin=None).write(GOOD2)
    assert cfg.stat().st_ino != old_inode, "readers holding the old file never see a half-written one"


def test_a_config_haproxy_rejects_never_reaches_the_live_file(tmp_path: Path, haproxy_bin: str):
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(GOOD)
    with pytest.raises(ValidationError) as err:
        ConfigWriter(cfg=cfg, haproxy_bin=haproxy_bin).write(BAD)
    assert cfg.read_text() == GOOD
    message = str(err.value)
    assert "\n" not in message and str(cfg) in message and "bogus_keyword" in message
    assert [p.name for p in tmp_path.iterdir()] == ["haproxy.cfg"]


def test_a_full_disk_leaves_the_live_file_intact_with_a_clear_error(tmpfs: Path):
    cfg = tmpfs / "haproxy.cfg"
    cfg.write_text(GOOD)
    filler = tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 1024):
            pass
    except OSError:
        pass  # full: exactly what we wanted
    finally:
        os.close(fd)
    with pytest.raises(WriteError, match="no space left on device"):
        ConfigWriter(cfg=cfg, haproxy_bin=None).write(GOOD2 * 40)
    assert cfg.read_text() == GOOD
    filler.unlink()
    assert ConfigWriter(cfg=cfg, haproxy_bin=None).write(GOOD2) is True, "recovers once space is back"
    assert cfg.read_text() == GOOD2


def test_a_read_only_config_directory_leaves_the_live_file_intact(tmpfs: Path):
    cfg = tmpfs / "haproxy.cfg"
    cfg.write_text(GOOD)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        with pytest.raises(WriteError, match="read-only file system") as err:
            ConfigWriter(cfg=cfg, haproxy_bin=None).write(GOOD2)
        assert str(cfg) in str(err.value)
        assert cfg.read_text() == GOOD
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    assert ConfigWriter(cfg=cfg, haproxy_bin=None).write(GOOD2) is True


def test_a_missing_validation_binary_is_reported_and_nothing_is_written(tmp_path: Path):
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(GOOD)
    with pytest.raises(WriteError, match="not found"):
        ConfigWriter(cfg=cfg, haproxy_bin=str(tmp_path / "no-haproxy")).write(GOOD2)
    assert cfg.read_text() == GOOD


def test_the_first_config_is_created_when_none_exists(tmp_path: Path, haproxy_bin: str):
    cfg = tmp_path / "haproxy.cfg"
    assert ConfigWriter(cfg=cfg, haproxy_bin=haproxy_bin).write(GOOD2) is True
    assert cfg.read_text() == GOOD2


def test_a_config_with_no_listener_is_refused_because_haproxy_would_not_start(
    tmp_path: Path, haproxy_bin: str
):
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(GOOD2)
    with pytest.raises(ValidationError, match="no listener"):
        ConfigWriter(cfg=cfg, haproxy_bin=haproxy_bin).write(GOOD)
    assert cfg.read_text() == GOOD2


@pytest.mark.parametrize("template_mode", [0o4755, 0o2775, 0o1777, 0o666, 0o7777])
def test_the_written_config_never_carries_setuid_setgid_sticky_or_world_writable_bits(
    tmp_path: Path, template_mode: int
):
    cfg = tmp_path / "haproxy.cfg"
    ConfigWriter(cfg=cfg, haproxy_bin=None).write(GOOD, mode=template_mode)
    mode = cfg.stat().st_mode & 0o7777
    assert mode == template_mode & 0o775, oct(mode)
    assert not mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWOTH)


def test_a_symlinked_config_is_replaced_at_its_target_and_stays_a_symlink(tmp_path: Path, haproxy_bin: str):
    # The layout of a ConfigMap-style mount: cfg -> ..data/haproxy.cfg, in another directory.
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    target = real_dir / "haproxy.cfg"
    target.write_text(GOOD)
    cfg = tmp_path / "etc" / "haproxy.cfg"
    cfg.parent.mkdir()
    cfg.symlink_to(target)
    old_inode = target.stat().st_ino
    assert ConfigWriter(cfg=cfg, haproxy_bin=haproxy_bin).write(GOOD2) is True
    assert cfg.is_symlink() and os.readlink(cfg) == str(target), "the link is never replaced by a plain file"
    assert target.read_text() == GOOD2
    assert target.stat().st_ino != old_inode, "the target is replaced by a rename, not rewritten in place"
    assert sorted(p.name for p in real_dir.iterdir()) == ["haproxy.cfg"], (
        "the temp file was next to the target"
    )
    assert sorted(p.name for p in cfg.parent.iterdir()) == ["haproxy.cfg"]
    assert ConfigWriter(cfg=cfg, haproxy_bin=None).write(GOOD2) is False, "compared through the link too"


def test_a_dangling_config_symlink_gets_its_target_created(tmp_path: Path):
    target = tmp_path / "real.cfg"
    cfg = tmp_path / "haproxy.cfg"
    cfg.symlink_to(target)
    assert ConfigWriter(cfg=cfg, haproxy_bin=None).write(GOOD) is True
    assert cfg.is_symlink() and target.read_text() == GOOD


def test_temp_files_of_a_killed_run_are_removed_at_start_and_nothing_else(tmp_path: Path):
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(GOOD)
    # What ConfigWriter.write leaves when SIGKILLed between mkstemp and rename ...
    stale = [tmp_path / ".haproxy.cfg.k3_x9a0b.tmp", tmp_path / ".haproxy.cfg.zzzzzzzz.tmp"]
    # ... and neighbours that only look alike: another file's temp, other lengths, a user's backup, a dir.
    kept = [
        tmp_path / ".other.cfg.k3_x9a0b.tmp",
        tmp_path / ".haproxy.cfg.short.tmp",
        tmp_path / ".haproxy.cfg.k3_x9a0b.tmp.bak",
        tmp_path / "haproxy.cfg.k3_x9a0b.tmp",
        tmp_path / ".haproxy.cfg.ABCDEFGH.tmp",
        tmp_path / "haproxy.cfg.bak",
    ]
    for path in stale + kept:
        path.write_text("x")
    (tmp_path / ".haproxy.cfg.dirdirdi.tmp").mkdir()
    ConfigWriter(cfg=cfg, haproxy_bin=None)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)
    assert (tmp_path / ".haproxy.cfg.dirdirdi.tmp").is_dir()
    assert cfg.read_text() == GOOD


def test_the_temp_file_name_write_uses_is_one_the_start_up_clean_up_removes(tmp_path: Path):
    # The clean-up must match what write() really creates: a "validator" records the name it was given.
    cfg = tmp_path / "haproxy.cfg"
    names = tmp_path / "names"
    recorder = tmp_path / "record-and-refuse"
    recorder.write_text(f'#!/bin/sh\nbasename "$3" >> {names}\nexit 1\n')
    recorder.chmod(0o755)
    for _ in range(3):
        with pytest.raises(ValidationError):
            ConfigWriter(cfg=cfg, haproxy_bin=str(recorder)).write(GOOD)
    temp_names = names.read_text().split()
    assert len(set(temp_names)) == 3 and all(n.startswith(".haproxy.cfg.") for n in temp_names)
    for name in temp_names:
        (tmp_path / name).write_text("left by a killed run")  # as if write() had died before its rename
    ConfigWriter(cfg=cfg, haproxy_bin=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["names", "record-and-refuse"]


@pytest.mark.timeout(10)
def test_a_fifo_at_the_config_path_is_an_error_naming_it_not_a_hang(tmp_path: Path):
    cfg = tmp_path / "haproxy.cfg"
    os.mkfifo(cfg)
    with pytest.raises(WriteError) as err:
        ConfigWriter(cfg=cfg, haproxy_bin=None).write(GOOD)
    assert str(err.value) == f"{cfg}: cannot read the live config: is a FIFO, not a regular file"
    assert stat.S_ISFIFO(os.lstat(cfg).st_mode)
