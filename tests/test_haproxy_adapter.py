"""parse_show_stat and read_stats against HAProxy 2.6's real `show stat` CSV and against garbage."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from monitor.adapters.stats import (
    StatKind,
    StatsParseError,
    StatsSocketError,
    parse_server_states,
    parse_show_stat,
    read_stats,
)
from monitor.testbed.haproxy import FakeApiServer, HaproxyLab
from tests.unixpeer import misbehaving_unix_server

TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "haproxy.cfg.j2"
HAVE_HAPROXY = os.access("/usr/sbin/haproxy", os.X_OK)

# Captured from haproxy 2.6.12 (Debian bookworm) running templates/haproxy.cfg.j2 with one backend.
SHOW_STAT_2_6 = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wr"
    "edis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lb"
    "tot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hr"
    "sp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_ab"
    "rt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtim"
    "e,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall"
    ",check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate"
    "_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,s"
    "rc_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn"
    "_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ss"
    "l_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,"
    "h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protoc"
    "ol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2"
    "_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_c"
    "onnections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_"
    "out,\n"
    "main,FRONTEND,,,0,0,20000,0,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,0,,,,,,,,,,,0,0,0,,,"
    "0,0,0,0,,,,,,,,,,,,,,,,,,,,,tcp,,0,0,0,,0,0,0,,,,,,,,,,,0,,,,,,,,,-,0,0,0,0,0,0,0,0,0,0,0,"
    "0,0,0,0,0,0,0,0,0,0,0,0,0,\n"
    "masters,master-0,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1,1,0,0,0,0,0,,1,6,1,,0,,2,0,,0,L7OK,200,3,"
    ",,,,,,,,,,0,0,,,,,-1,,,0,0,0,0,,,,Layer7 check passed,,1,3,3,,,,127.0.0.2:45187,,tcp,,,,,,"
    ",,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,-,1,0,0,,,,,,,,,,,,,,,,,,,,,,\n"
    "masters,BACKEND,0,0,0,0,2000,0,0,0,0,0,,0,0,0,0,UP,1,1,0,,0,0,0,,1,6,0,,0,,1,0,,0,,,,,,,,,"
    ",,,,,0,0,0,0,0,0,-1,,,0,0,0,0,,,,,,,,,,,,,,tcp,roundrobin,,,,,,,0,0,0,,,,,0,0,0,0,0,,,,,1,"
    "0,0,0,-,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,139,24,0,0,\n"
)


def test_real_output_gives_frontend_backend_and_server_rows() -> None:
    rows = parse_show_stat(SHOW_STAT_2_6)
    by_key = {(r.proxy, r.server): r for r in rows}
    assert set(by_key) == {("main", "FRONTEND"), ("masters", "master-0"), ("masters", "BACKEND")}
    assert by_key[("main", "FRONTEND")].is_frontend
    assert by_key[("main", "FRONTEND")].status == "OPEN"
    assert by_key[("masters", "BACKEND")].is_backend
    server = by_key[("masters", "master-0")]
    assert server.kind is StatKind.SERVER and server.is_server and server.is_up
    assert server.status == "UP"
    assert server.check_status == "L7OK"
    assert server.address == "127.0.0.2:45187"
    assert server.weight == 1
    assert server.current_sessions == 0
    assert by_key[("main", "FRONTEND")].weight is None


def test_a_down_server_is_not_up() -> None:
    text = SHOW_STAT_2_6.replace(",UP,1,1,0,0,0,0,0,,1,6,1,", ",DOWN,1,1,0,3,1,9,9,,1,6,1,", 1)
    server = next(r for r in parse_show_stat(text) if r.server == "master-0")
    assert server.status == "DOWN"
    assert not server.is_up
    assert server.check_failures == 3


def test_the_check_in_progress_marker_is_not_part_of_the_check_status() -> None:
    text = SHOW_STAT_2_6.replace(",L7OK,", ",* L7OK,", 1)
    server = next(r for r in parse_show_stat(text) if r.server == "master-0")
    assert server.check_status == "L7OK"
    assert server.check_in_progress


GARBAGE = [
    ("", "empty answer"),
    ("Unknown command. Please enter one of the following commands only :\n  help\n", "header"),
    ("# pxname,svname,qcur\nmain,FRONTEND,0\n", "lacks column(s) status, scur, stot, type"),
    ("# pxname,svname,status,scur,stot,type,\nmasters,m0,UP,zero,0,2,\n", "line 2: column 'scur' is 'zero'"),
    ("# pxname,svname,status,scur,stot,type,\nmain,FRONTEND,OPEN,0,0,7,\n", "line 2: unknown type 7"),
    ("# pxname,svname,status,scur,stot,type,\nmain,FRONTEND,OPEN,0,0,,\n", "line 2: unknown type None"),
    ("# pxname,svname,status,scur,stot,type,\nmain,FRONTEND\n", "line 2: 2 fields"),
]


@pytest.mark.parametrize(
    ("garbage", "message"),
    [
        *GARBAGE,
        ("# pxname,svname,status,scur,stot,type,\nmain,FRONTEND,OPEN,zero,0,0,\n", "'scur' is 'zero'"),
    ],
)
def test_garbage_raises_a_parse_error_that_says_what_is_wrong(garbage: str, message: str) -> None:
    with pytest.raises(StatsParseError) as info:
        parse_show_stat(garbage)
    assert message in str(info.value)


@pytest.mark.parametrize(("garbage", "message"), GARBAGE)
def test_the_server_state_parse_refuses_the_same_garbage_with_the_same_message(
    garbage: str, message: str
) -> None:
    """The poll's and /metrics' parse reads fewer columns, but takes nothing the full parse refuses in them."""
    with pytest.raises(StatsParseError) as info:
        parse_server_states(garbage)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        SHOW_STAT_2_6,
        SHOW_STAT_2_6.replace(",UP,1,1,0,0,0,0,0,,1,6,1,", ",DOWN,1,1,0,3,1,9,9,,1,6,1,", 1),
        SHOW_STAT_2_6.replace(",L7OK,", ",* L7OK,", 1).replace(
            ",0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,", ",0,0,4,0,,0,0,0,,0,,0,0,0,0,UP,"
        ),
        "# pxname,svname,scur,status,type,check_status,stot,\n"
        "masters,m0,7,DOWN,2,L4CON,1,\nmasters,BACKEND,7,DOWN,1,,1,\n",
        "# pxname,svname,status,scur,stot,type,\nmasters,m0,no check,3,9, 2,\nmasters,m1,MAINT,,,02,\n",
    ],
)
def test_the_server_states_are_the_server_rows_of_the_full_parse(text: str) -> None:
    """What the loop and /metrics follow every check interval is exactly what the full rows say of each server."""
    full = [row.state() for row in parse_show_stat(text) if row.is_server]
    assert full, "each text has at least one server row"
    assert parse_server_states(text) == full


def test_each_header_picks_its_own_columns_when_haproxy_changes_its_layout() -> None:
    """The column layout is remembered per header (it is the same on every read): a HAProxy that answers
    with another column order or width, as an upgrade may, is read by its own header, then and afterwards."""
    first = "# pxname,svname,status,scur,stot,type,\nmasters,m0,UP,5,9,2,\n"
    swapped = "# pxname,svname,scur,status,type,stot,\nmasters,m0,7,DOWN,2,11,\n"
    wide = "# " + ",".join(f"x{i}" for i in range(3000)) + ",pxname,svname,status,scur,stot,type,\n"
    wide += "," * 3000 + "masters,m0,MAINT,1,2,2,\n"
    for _ in range(2):
        for text, (status, sessions, total) in (
            (first, ("UP", 5, 9)),
            (swapped, ("DOWN", 7, 11)),
            (wide, ("MAINT", 1, 2)),
        ):
            (row,) = parse_show_stat(text)
            assert (row.server, row.status, row.current_sessions, row.total_sessions) == (
                "m0",
                status,
                sessions,
                total,
            )
            assert row.is_server


def test_read_stats_names_the_socket_when_nothing_listens(tmp_path: Path) -> None:
    path = tmp_path / "missing.sock"
    with pytest.raises(StatsSocketError) as info:
        read_stats(path, timeout=0.5)
    assert str(path) in str(info.value)


def test_read_stats_rejects_a_socket_that_is_not_haproxy(tmp_path: Path) -> None:
    path = tmp_path / "other.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(100)
                conn.sendall(b"Permission denied\n")

        thread = threading.Thread(target=answer)
        thread.start()
        with pytest.raises(StatsParseError, match="Permission denied"):
            read_stats(path, timeout=2)
        thread.join()


@pytest.mark.haproxy
@pytest.mark.skipif(not HAVE_HAPROXY, reason="needs /usr/sbin/haproxy")
def test_read_stats_from_a_live_haproxy_lists_every_server(tmp_path: Path) -> None:
    with (
        HaproxyLab(workdir=tmp_path / "lab", template=TEMPLATE) as lab,
        FakeApiServer(cert_dir=tmp_path / "pki", address="127.0.0.2") as up,
        FakeApiServer(cert_dir=tmp_path / "pki", address="127.0.0.3", ready=False) as down,
    ):
        lab.write_config(lab.render([up.backend("master-0"), down.backend("master-1")]))
        lab.start_handler()
        # rise 1 / fall 3: the ready one is checked UP, the failing one leaves UP after 3 checks (inter 5s),
        # so only its check status (L7STS: HTTP 500) is asserted here.
        lab.wait_until(
            lambda: (
                lab.servers()["master-0"].check_status == "L7OK"
                and lab.servers()["master-1"].check_status == "L7STS"
            ),
            timeout=15,
        )
        rows = read_stats(lab.admin_socket)
        kinds = {(r.proxy, r.kind) for r in rows}
        assert ("main", StatKind.FRONTEND) in kinds
        assert ("masters", StatKind.BACKEND) in kinds
        servers = lab.servers()
        assert servers["master-0"].address == f"127.0.0.2:{up.port}"
        assert servers["master-1"].address == f"127.0.0.3:{down.port}"


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("silent", "no complete answer within the deadline"),
        ("no-accept", "Resource temporarily unavailable"),  # a full backlog refuses at once
    ],
)
def test_a_stats_socket_that_never_answers_or_never_accepts_costs_at_most_the_deadline(
    tmp_path: Path, mode: str, message: str
) -> None:
    # Trickling and oversized answers: tests/test_stats_source.py.
    with misbehaving_unix_server(tmp_path / "admin.sock", mode) as path:
        start = time.monotonic()
        with pytest.raises(StatsSocketError) as info:
            read_stats(path, timeout=0.5)
        took = time.monotonic() - start
    assert took < 0.5 + 0.3, f"{mode}: took {took:.2f}s"
    assert str(info.value) == f"stats socket {path}: {message}"
