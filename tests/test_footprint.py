"""What the main job loads: the official client's kubeconfig loader, without its API classes, models or OIDC."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Everything the main job imports on its way to running (app.run imports the adapters lazily).
MAIN_JOB = (
    "monitor.entry",
    "monitor.cli",
    "monitor.app",
    "monitor.adapters.kube",
    "monitor.adapters.filewatch",
    "monitor.adapters.health",
    "monitor.adapters.nftables",
    "monitor.adapters.httpserver",
    "monitor.adapters.netif",
)


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_the_main_job_loads_no_api_class_model_oidc_library_or_http_library_of_the_official_client() -> None:
    heavy = (
        "kubernetes.client.api",
        "kubernetes.client.models",
        "kubernetes.client.api_client",
        "kubernetes.dynamic",
        "kubernetes.watch",
        "pydantic",
        "requests",
        "requests_oauthlib",
        "oauthlib",
        "dateutil",
    )
    code = (
        f"import importlib, json, sys\nfor m in {MAIN_JOB!r}: importlib.import_module(m)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in {heavy!r}))))"
    )
    assert json.loads(_python(code)) == []


def test_the_full_official_client_still_imports_in_the_same_process_afterwards() -> None:
    code = (
        "import json\n"
        "from monitor.adapters.kube.official import kube_config\n"
        "import kubernetes\n"
        "from kubernetes import client, config, watch\n"
        "session = kube_config.OAuth2Session(client_id='x')\n"
        "print(json.dumps([client.CoreV1Api.__name__, client.ApiClient.__module__, config.kube_config is kube_config,"
        " type(session).__name__, watch.Watch.__name__, bool(kubernetes.__version__)]))"
    )
    assert json.loads(_python(code)) == [
        "CoreV1Api",
        "kubernetes.client.api_client",
        True,
        "OAuth2Session",
        "Watch",
        True,
    ]
