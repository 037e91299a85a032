"""The package as users install it: the built wheel in a fresh virtualenv outside the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# What a source distribution holds: the checkout without its caches, virtualenv, tests and benchmarks.
NOT_SHIPPED = shutil.ignore_patterns(
    ".git", ".venv", "tests", "bench", "__pycache__", "build", "dist", "*.egg-info", ".*_cache", ".hypothesis"
)
DATA = {
    "ApiPort": 6443,
    "LbPort": 9445,
    "StatPort": 29445,
    "FrontendAddr": "",
    "Backends": [{"Host": "master-0", "Address": "192.0.2.11", "Port": 6443}],
}


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH pointing into the checkout, no MONITOR_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MONITOR_", "VIRTUAL_ENV"))}
    return {**env, **extra}


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel and every dependency's, built once from a copy of the checkout."""
    tmp = tmp_path_factory.mktemp("wheelhouse")
    source = tmp / "source"
    shutil.copytree(REPO, source, ignore=NOT_SHIPPED, symlinks=True)
    out = tmp / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--disable-pip-version-check",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        timeout=300,
        env=clean_env(),
    )
    return out


@pytest.fixture(scope="module")
def venv(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv outside the checkout with the wheel installed from the wheelhouse alone."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    # The system python3, as a user's; without its own pip (the test's pip installs into it: 7 s instead of 30).
    subprocess.run(["python3", "-m", "venv", "--without-pip", str(root)], check=True, timeout=60)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(root / "bin" / "python"),
            "install",
            "-q",
            "--no-compile",
            "--disable-pip-version-check",
            "--no-index",
            "--find-links",
            str(wheelhouse),
            "haproxy-monitor",
        ],
        check=True,
        timeout=300,
        env=clean_env(),
    )
    return root


def run(venv: Path, *argv: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / argv[0]), *argv[1:]],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_wheel_installs_both_commands_and_runs_from_the_virtualenv_not_the_checkout(venv, tmp_path):
    where = run(
        venv,
        "python",
        "-c",
        "import monitor, haproxy_reload_handler as h; print(monitor.__file__, h.__file__)",
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    assert all(path.startswith(str(venv)) for path in where.stdout.split()), where.stdout
    handler = run(venv, "haproxy-reload-handler", "--help", cwd=tmp_path)
    assert handler.returncode == 0 and "RELOAD_HANDLER_CONFIG" in handler.stdout, handler.stderr


def test_the_installed_monitor_prints_a_shipped_template_and_renders_it(venv, tmp_path):
    names = run(venv, "monitor", "template", cwd=tmp_path)
    assert names.stdout.split() == ["haproxy.cfg.j2", "haproxy.cfg.tmpl", "openshift-haproxy.cfg.tmpl"]
    for name in names.stdout.split():
        template = run(venv, "monitor", "template", name, cwd=tmp_path)
        assert template.returncode == 0, template.stderr
        (tmp_path / name).write_text(template.stdout)
        (tmp_path / "data.json").write_text(json.dumps(DATA))
        rendered = run(venv, "monitor", "render", name, "data.json", cwd=tmp_path)
        assert rendered.returncode == 0, rendered.stderr
        assert "192.0.2.11:6443" in rendered.stdout and "9445" in rendered.stdout


@pytest.mark.haproxy
def test_the_installed_monitor_runs_the_demo_to_its_end(venv, tmp_path, haproxy_bin):
    # The demo stops by itself after its four steps (about 8 s); the timeout only guards a hang.
    demo = run(venv, "monitor", "demo", cwd=tmp_path, timeout=90)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert demo.stdout.rstrip().endswith("demo passed: 1 reloads, 3 runtime changes, 0 failed steps")


@pytest.fixture(scope="module")
def zipapp(wheelhouse: Path) -> Iterator[Path]:
    """The single-file build (container/build-zipapp), offline from the wheelhouse, in a directory anyone can read."""
    # Not under pytest's tmp directory: that one is private to root, and one test runs the file as nobody.
    where = Path(tempfile.mkdtemp(prefix="hm-zipapp-"))
    try:
        where.chmod(0o755)
        out = where / "monitor.pex"
        subprocess.run(
            ["sh", str(REPO / "container" / "build-zipapp"), str(out), "-f", str(wheelhouse), "--no-pypi"],
            check=True,
            timeout=300,
            env=clean_env(),
            capture_output=True,
        )
        yield out
    finally:
        shutil.rmtree(where, ignore_errors=True)


def bare(
    *argv: str, home: Path | str, cwd: Path, user: int | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python3 -I`` (the system interpreter, isolated) in an environment that holds nothing but PATH and HOME."""
    command = ["python3", "-I", *argv]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(
        command,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_single_file_build_runs_on_the_bare_system_python_with_nothing_else(zipapp, tmp_path):
    from monitor import __version__

    home = tmp_path / "home"
    home.mkdir()
    version = bare(str(zipapp), "--version", home=home, cwd=tmp_path)
    assert version.returncode == 0 and version.stdout == f"monitor {__version__}\n", version.stderr
    assert (home / ".cache" / "pex").is_dir()  # unpacked once, where pex keeps its cache
    template = bare(str(zipapp), "template", "haproxy.cfg.tmpl", home=home, cwd=tmp_path)
    (tmp_path / "haproxy.cfg.tmpl").write_text(template.stdout)
    (tmp_path / "data.json").write_text(json.dumps(DATA))
    rendered = bare(str(zipapp), "render", "haproxy.cfg.tmpl", "data.json", home=home, cwd=tmp_path)
    assert rendered.returncode == 0 and "192.0.2.11:6443" in rendered.stdout, rendered.stderr
    handler = bare(str(zipapp), "--help", home=home, cwd=tmp_path, PEX_SCRIPT="haproxy-reload-handler")
    assert handler.returncode == 0 and "RELOAD_HANDLER_CONFIG" in handler.stdout, handler.stderr


def test_the_single_file_build_runs_for_a_user_whose_home_is_not_writable(zipapp, tmp_path):
    nobody = 65534
    # A temporary directory of the test's own, so that pex's fallback copy does not outlive it.
    scratch = Path(tempfile.mkdtemp(prefix="hm-nobody-"))
    try:
        scratch.chmod(0o1777)
        fallback = bare(
            str(zipapp), "--version", home="/nonexistent", cwd=scratch, user=nobody, TMPDIR=str(scratch)
        )
        assert fallback.returncode == 0, fallback.stderr
        assert "un-writeable" in fallback.stderr and "falling back to a temporary PEX_ROOT" in fallback.stderr
        # What the systemd unit does: PEX_ROOT in a directory the service may write (CacheDirectory=).
        cache = scratch / "cache"
        cache.mkdir()
        os.chown(cache, nobody, nobody)
        cached = bare(
            str(zipapp), "--version", home="/nonexistent", cwd=scratch, user=nobody, PEX_ROOT=str(cache)
        )
        assert cached.returncode == 0 and cached.stderr == "", cached.stderr
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
