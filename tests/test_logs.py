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
