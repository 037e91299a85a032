"""Every Kubernetes manifest in the repository is valid against Kubernetes' own schemas (kubernetes-validate)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = sorted(
    p for p in REPO.glob("**/*.y*ml") if not p.relative_to(REPO).parts[0].startswith((".", "tests"))
)


def validator() -> str:
    found = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("kubernetes-validate is missing: it is in pyproject's dev extra (bash .ci/setup)")
    return found


def test_the_repository_ships_the_static_pod_manifest():
    assert REPO / "container" / "haproxy-pod.yaml" in MANIFESTS


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: str(p.relative_to(REPO)))
def test_the_manifest_passes_strict_schema_validation(manifest):
    proc = subprocess.run(
        [validator(), "--strict", str(manifest)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0 and "passed" in proc.stdout, proc.stdout + proc.stderr


def test_a_cold_start_does_not_restart_haproxy_before_its_first_config():
    pod = yaml.safe_load((REPO / "container" / "haproxy-pod.yaml").read_text())
    haproxy = next(c for c in pod["spec"]["containers"] if c["name"] == "haproxy")
    startup, liveness = haproxy["startupProbe"], haproxy["livenessProbe"]
    assert startup["httpGet"] == liveness["httpGet"] == {"path": "/haproxy_ready", "port": 9444}
    # Ten minutes for the API to answer before the kubelet gives up on the cold start.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


def test_strict_validation_refuses_a_misspelt_field(tmp_path):
    """Guards against a vacuous pass: the validator does read the fields."""
    text = (REPO / "container" / "haproxy-pod.yaml").read_text().replace("startupProbe:", "startupProbes:")
    bad = tmp_path / "pod.yaml"
    bad.write_text(text)
    proc = subprocess.run(
        [validator(), "--strict", str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode != 0
