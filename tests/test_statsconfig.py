"""Finding the stats sources in a rendered haproxy.cfg: the reference's own template, and HAProxy's syntax."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.model import Backend, LBConfig
from monitor.render import Renderer
from monitor.statsconfig import StatsPage, page_from_url, redact_url, stats_endpoints, words

REPO = Path(__file__).resolve().parent.parent


def proxy(*lines: str, head: str = "listen stats", defaults: str = "mode http") -> str:
    body = "\n".join(f"  {line}" for line in lines)
    return f"global\n  maxconn 10\ndefaults\n  {defaults}\n{head}\n{body}\n"


@pytest.mark.parametrize("template", ["openshift-haproxy.cfg.tmpl", "haproxy.cfg.j2", "haproxy.cfg.tmpl"])
def test_the_shipped_templates_offer_the_admin_socket_then_the_stats_page_with_its_credentials(template: str):
    config = LBConfig(
        api_port=6443, lb_port=9445, stat_port=29445, backends=(Backend("master-0", "192.0.2.11", 6443),)
    )
    text = Renderer(REPO / "templates" / template).render(config)
    found = stats_endpoints(text)
    assert found.sockets == ("/var/lib/haproxy/run/haproxy.sock",)
    assert found.pages == (
        StatsPage(
            host="localhost",
            port=29445,
            uri="/haproxy_stats",
            user="Username",
            password="Password",
            section="listen stats",
        ),
    )
    assert found.pages[0].url == "http://localhost:29445/haproxy_stats;csv"


@pytest.mark.parametrize(
    ("bind", "where"),
    [
        ("bind :8404", [("127.0.0.1", 8404)]),
        ("bind *:8404", [("127.0.0.1", 8404)]),
        ("bind 0.0.0.0:8404", [("127.0.0.1", 8404)]),
        ("bind :::8404 v4v6", [("::1", 8404)]),
        ("bind ipv6@::1:8404", [("::1", 8404)]),
        ("bind ipv4@192.0.2.5:8404", [("192.0.2.5", 8404)]),
        ("bind 192.0.2.5:8404,:8405", [("192.0.2.5", 8404), ("127.0.0.1", 8405)]),
        ("bind 127.0.0.1:8404-8406", [("127.0.0.1", 8404)]),
        ("bind /run/stats.sock", []),
        ("bind unix@/run/stats.sock", []),
        ("bind :8404 ssl crt /etc/x.pem", []),
        ('bind "${STATS_ADDR}:8404"', []),
    ],
)
def test_a_stats_page_is_reached_on_loopback_for_wildcard_binds_and_skipped_when_not_plain_tcp(bind, where):
    pages = stats_endpoints(proxy(bind, "stats enable")).pages
    assert [(p.host, p.port) for p in pages] == where


def test_a_page_needs_http_mode_a_frontend_or_listen_section_and_must_not_be_disabled():
    assert stats_endpoints(proxy("bind :1", "stats enable", defaults="mode tcp")).pages == ()
    assert len(stats_endpoints(proxy("bind :1", "mode http", "stats enable", defaults="mode tcp")).pages) == 1
    assert len(stats_endpoints(proxy("bind :1", "stats enable", head="frontend fe")).pages) == 1
    assert stats_endpoints(proxy("bind :1", "stats enable", head="backend be")).pages == ()
    assert stats_endpoints(proxy("bind :1", "stats enable", "disabled")).pages == ()
    assert stats_endpoints(proxy("bind :1", "stats hide-version")).pages == (), (
        "no keyword that enables stats"
    )


def test_stats_without_a_uri_use_haproxys_default_uri_and_any_stats_keyword_enables_them():
    (page,) = stats_endpoints(proxy("bind :1", "stats auth admin:secret")).pages
    assert (page.uri, page.user, page.password) == ("/haproxy?stats", "admin", "secret")
    assert page.url == "http://127.0.0.1:1/haproxy?stats;csv"


def test_the_first_stats_auth_line_gives_the_credentials_and_quotes_and_comments_follow_haproxy():
    text = proxy(
        "bind :1  # the stats page", "stats uri /s", "stats auth 'ad min:p#ss word' # first", "stats auth b:c"
    )
    (page,) = stats_endpoints(text).pages
    assert (page.user, page.password) == ("ad min", "p#ss word")
    assert words(r"stats auth u:p\ w#rest") == ["stats", "auth", "u:p w"]
    assert words('a "" b') == ["a", "", "b"]


def test_only_absolute_unix_admin_sockets_in_global_are_taken_in_file_order():
    text = (
        "global\n"
        "  stats socket /run/a.sock mode 600 level admin\n"
        "  #stats socket /run/commented.sock\n"
        "  stats socket ipv4@127.0.0.1:9999 level admin\n"
        "  stats socket unix@/run/b.sock\n"
        "  stats socket relative.sock\n"
        "frontend fe\n"
        "  stats socket /run/not-global.sock\n"
    )
    assert stats_endpoints(text).sockets == ("/run/a.sock", "/run/b.sock")


def test_a_config_without_stats_offers_nothing():
    assert stats_endpoints("global\n  maxconn 1\nfrontend fe\n  bind :80\n") == stats_endpoints("")


def test_a_stats_url_option_gives_host_port_uri_and_unquoted_credentials():
    page = page_from_url("http://user:p%40ss@127.0.0.1:29445/haproxy_stats")
    assert (page.host, page.port, page.uri, page.user, page.password) == (
        "127.0.0.1",
        29445,
        "/haproxy_stats",
        "user",
        "p@ss",
    )
    assert page.url == "http://127.0.0.1:29445/haproxy_stats;csv"
    assert page_from_url("http://[::1]:8404/s;csv").url == "http://[::1]:8404/s;csv"


@pytest.mark.parametrize(
    "url", ["https://u:secret@h:1/s", "ftp://h/s", "http://u:secret@:1/s", "http://h:99999/"]
)
def test_a_bad_stats_url_is_refused_without_showing_its_password(url: str):
    with pytest.raises(ValueError) as info:
        page_from_url(url)
    assert "secret" not in str(info.value)


def test_the_password_is_in_no_representation_meant_for_humans():
    page = page_from_url("http://user:secret@127.0.0.1:1/s")
    assert "secret" not in repr(page) and "secret" not in page.url
    assert redact_url("http://user:secret@h:1/a@b") == "http://user:***@h:1/a@b"
    assert redact_url("http://h:1/a@b") == "http://h:1/a@b"
