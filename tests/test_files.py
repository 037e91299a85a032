"""The live haproxy.cfg is replaced only by validated, complete files; on any failure it stays byte-for-byte."""

from __future__ import annotations

import os
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
