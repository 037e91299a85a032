"""Differential tests: monitor's Go template engine against Go's text/template, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gotmpl import corpus
from tests.gotmpl.client import Case, build_oracle, compare, run_go, run_python

REPO = Path(__file__).resolve().parent.parent
TEMPLATE_FILES = sorted((REPO / "templates").glob("*.tmpl"))
REFERENCE = Path("/work/shared/reference/openshift-haproxy.cfg.tmpl")

pytestmark = pytest.mark.golang


@pytest.fixture(scope="session")
def go_oracle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_oracle(_oracle_dir(tmp_path_factory))


def _oracle_dir(factory: pytest.TempPathFactory) -> Path:
    path = factory.getbasetemp() / "gotmpl-oracle"
    path.mkdir(exist_ok=True)
    return path


def _assert_agree(binary: Path, cases: list[Case]) -> None:
    reports = compare(binary, cases)
    assert not reports, f"{len(reports)} of {len(cases)} cases differ from Go:\n\n" + "\n\n".join(
        reports[:10]
    )


def _template_sources() -> list[tuple[str, str]]:
    sources = [(p.name, p.read_text()) for p in TEMPLATE_FILES]
    if REFERENCE.exists():
        sources.append(("reference:" + REFERENCE.name, REFERENCE.read_text()))
    return sources


def test_every_shipped_template_renders_like_go_for_every_lbconfig(go_oracle: Path) -> None:
    sources = _template_sources()
    assert any(name == "openshift-haproxy.cfg.tmpl" for name, _ in sources)
    cases = [
        Case(f"{name}", text, data, mode="lbconfig")
        for name, text in sources
        for data in corpus.LBCONFIGS.values()
    ]
    _assert_agree(go_oracle, cases)
    # Guard against a vacuous pass: the shipped templates must actually render.
    results = run_go(go_oracle, cases)
    assert all(r.ok for r in results), [r.err for r in results if not r.ok]


def test_the_reference_template_output_holds_every_backend_line(go_oracle: Path) -> None:
    text = (REPO / "templates" / "openshift-haproxy.cfg.tmpl").read_text()
    case = Case("ref", text, corpus.LBCONFIGS["odd-names"], mode="lbconfig")
    out = run_python(case)
    assert out.ok
    assert f"   server {corpus.ODD_HOST} ::1:0 weight 1".encode() in out.out
    assert run_go(go_oracle, [case])[0].out == out.out


def test_struct_mode_constructs_render_like_go(go_oracle: Path) -> None:
    cases = [
        Case(f"lb{i}-{key}", text, data, mode="lbconfig")
        for i, text in enumerate(corpus.LBCONFIG_TEMPLATES)
        for key, data in corpus.LBCONFIGS.items()
    ]
    _assert_agree(go_oracle, cases)


def test_hand_written_corpus_renders_like_go(go_oracle: Path) -> None:
    cases = [Case(f"c{i}", text, data) for i, (text, data) in enumerate(corpus.GENERIC)]
    _assert_agree(go_oracle, cases)
    # Both outcomes must be exercised: plenty of successes and plenty of errors.
    results = run_go(go_oracle, cases)
    assert sum(r.ok for r in results) > 80
    assert sum(not r.ok for r in results) > 40


def test_a_mismatch_is_reported_with_a_readable_diff(go_oracle: Path) -> None:
    # The comparison itself must be able to fail: Go's output differs from a wrong expectation.
    from tests.gotmpl.client import Outcome, mismatch_report

    case = Case("m", "a\n{{.x}}\n", {"x": 1})
    go = run_go(go_oracle, [case])[0]
    report = mismatch_report(case, go, Outcome(True, b"a\n2\n", ""))
    assert report is not None
    assert "-1" in report and "+2" in report
