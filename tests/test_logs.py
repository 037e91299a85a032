"""One log line per event with a subsystem field, as text or JSON; errors are logged once per cause."""

from __future__ import annotations

import json
import logging

from monitor import logs


def capture(fmt: str, capsys) -> list[str]:
    logs.setup(fmt=fmt, level="info")
    log = logs.Log("reload")
    log.info("reload sent", socket="/var/run/haproxy/haproxy-master.sock", attempt=2)
    log.debug("not shown at info level")
    once = logs.OnceLog(logs.Log("write"))
    once.error("cfg: disk full")
    once.error("cfg: disk full")
    once.clear("written again")
    return capsys.readouterr().err.splitlines()


def test_json_logs_are_one_object_per_line_with_subsystem_and_fields(capsys):
    lines = capture("json", capsys)
    docs = [json.loads(line) for line in lines]
    assert docs[0]["subsystem"] == "reload" and docs[0]["msg"] == "reload sent"
    assert docs[0]["socket"] == "/var/run/haproxy/haproxy-master.sock" and docs[0]["attempt"] == 2
    assert docs[0]["level"] == "info" and docs[0]["ts"].endswith("Z")
    assert [d["msg"] for d in docs] == ["reload sent", "cfg: disk full", "written again"]
    assert docs[2]["previous_error"] == "cfg: disk full"


def test_text_logs_carry_the_subsystem_and_quote_values_with_spaces(capsys):
    lines = capture("text", capsys)
    assert len(lines) == 3
    assert " reload " in lines[0] and "socket=/var/run/haproxy/haproxy-master.sock attempt=2" in lines[0]
    assert lines[2].endswith('previous_error="cfg: disk full"')
    logging.getLogger(logs.ROOT).handlers.clear()


def test_an_unexpected_exception_is_logged_with_its_traceback_once_and_repeats_are_only_counted(capsys):
    counted: list[int] = []
    for fmt in ("text", "json"):
        logs.setup(fmt=fmt, level="info")
        unexpected = logs.UnexpectedLog(logs.Log("loop"), count=lambda: counted.append(1))
        for _ in range(3):
            try:
                {}["missing"]
            except KeyError as exc:
                unexpected.exception("unexpected error handling Objects", exc)
        err = capsys.readouterr().err
        if fmt == "text":
            first, *trace = err.splitlines()
            assert first.endswith("unexpected error handling Objects: KeyError('missing')")
            assert trace[0] == "Traceback (most recent call last):" and trace[-1] == "KeyError: 'missing'"
            assert "in test_an_unexpected_exception" in err, "the traceback names where it happened"
        else:
            (line,) = err.splitlines()
            doc = json.loads(line)
            assert doc["msg"].startswith("unexpected error") and doc["traceback"].endswith(
                "KeyError: 'missing'"
            )
    assert len(counted) == 6, "every occurrence is counted"
    logging.getLogger(logs.ROOT).handlers.clear()
