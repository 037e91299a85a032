"""The Kubernetes adapter's error tree, the one table from HTTP status to error, and secret-free one-line messages."""

from __future__ import annotations

import json
from typing import Any

import urllib3


class KubeError(Exception):
    """Base of the adapter's internal error tree; str() is a one-line message without secrets."""


class ConfigError(KubeError):
    """The kubeconfig (or a file it references) cannot be used: fix the file, then reload."""


class Unreachable(KubeError):
    """Network, TLS, timeout or 5xx: retryable, and a reason to try the fallback server."""


class Unauthorized(KubeError):
    """401: the credentials were rejected; rebuild the client from the kubeconfig."""


class Gone(KubeError):
    """410: the resourceVersion is too old; list again."""


class RequestFailed(KubeError):
    """Any other refusal (403, 404, a watch ERROR event): retry later with backoff."""


class Malformed(KubeError):
    """An answer that breaks the API's promises (wrong types, no items, too large, too slow): list again later.

    Never data: what came with it is dropped whole, so the backends already served stay.
    """


class InsecureServer(ConfigError):
    """A server URL that is not https://: no request is sent to it, so no credential travels in clear."""


class Interrupted(Exception):
    """A request was aborted on purpose (close or credential reload): not an error, nothing to report."""


class StreamCut(Exception):
    """A watch stream ended abruptly after it had started: watch again from the same resourceVersion."""


# Placeholders: {server}, {status}, {path}, {detail} (the server's own message), {kubeconfig}.
_BY_STATUS: dict[int, tuple[type[KubeError], str]] = {
    401: (Unauthorized, "{server}: 401 Unauthorized: credentials from kubeconfig {kubeconfig} were rejected"),
    410: (Gone, "{server}: 410 Gone: {detail}"),
    429: (Unreachable, "{server}: HTTP {status}: {detail}"),
}
_SERVER_ERROR = (Unreachable, "{server}: HTTP {status}: {detail}")  # every 5xx
_OTHER = (RequestFailed, "{server}: HTTP {status} for {path}: {detail}")


def error_for_status(status: int, *, server: str, path: str, detail: str, kubeconfig: object) -> KubeError:
    """The error a non-2xx answer stands for; 5xx and 429 are retryable, like a network failure."""
    cls, message = _BY_STATUS.get(status) or (_SERVER_ERROR if status >= 500 else _OTHER)
    return cls(message.format(server=server, status=status, path=path, detail=detail, kubeconfig=kubeconfig))


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# A Status body is a few hundred bytes; more is not read, whatever the server sends.
_STATUS_BYTES = 64 * 1024


def status_message(resp: Any) -> str:
    """The message of a Status body in a refusal (urllib3 response, body unread), else the HTTP reason."""
    try:
        body = json.loads(resp.read(_STATUS_BYTES) or b"{}")
    except (ValueError, OSError, urllib3.exceptions.HTTPError):
        return resp.reason or "no details"
    if isinstance(body, dict) and body.get("message"):
        return _short(str(body["message"]))
    return str(resp.reason or "no details")


def describe(exc: BaseException, *, server: str, timeout: float) -> str:
    """One secret-free line saying what happened to a request to ``server``."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 6:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__ or getattr(cur, "reason", None)
        if not isinstance(cur, BaseException):
            cur = None
    text = " ".join(one_line(e) for e in chain).lower()
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "connection refused" in text:
        return f"connection refused by {server}"
    return f"{server}: {_cause(chain, text, timeout)}"


def _cause(chain: list[BaseException], text: str, timeout: float) -> str:
    """The cause of a failed request, with a hint for the usual TLS mistakes."""
    if "certificate verify failed" in text:
        detail = "unable to get local issuer certificate" if "local issuer" in text else _short(text)
        if "expired" in text:
            detail = "the server certificate has expired"
        elif "hostname mismatch" in text or "doesn't match" in text:
            detail = "the server certificate does not match the host name"
        return (
            f"TLS: server certificate not trusted ({detail}); check certificate-authority in the kubeconfig"
        )
    if "alert certificate expired" in text:
        return "TLS: the server rejected the client certificate: it has expired; renew client-certificate"
    if "alert unknown ca" in text or "alert bad certificate" in text or "alert certificate unknown" in text:
        return "TLS: the server rejected the client certificate (unknown CA or bad certificate)"
    if "alert" in text and "certificate" in text:
        return f"TLS: the server rejected the client certificate ({_short(text)})"
    # urllib3 derives NewConnectionError (refused, unreachable, DNS) from ConnectTimeoutError: not a timeout.
    if any(
        isinstance(e, urllib3.exceptions.ConnectTimeoutError)
        and not isinstance(e, urllib3.exceptions.NewConnectionError)
        for e in chain
    ):
        return f"connect timed out after {timeout:g}s"
    if any(isinstance(e, (urllib3.exceptions.ReadTimeoutError, TimeoutError)) for e in chain):
        return "no answer (read timed out)"
    if "reset by peer" in text or "connection aborted" in text or "remote end closed" in text:
        return "connection reset"
    if "name or service not known" in text or "failed to resolve" in text or "nodename nor servname" in text:
        return "host name does not resolve"
    if "unexpected_eof" in text or "eof occurred in violation of protocol" in text:
        return "connection closed during the TLS handshake"
    if "ssl" in text or "tls" in text:
        return f"TLS: {_short(text)}"
    return _short(text)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 160 else text[:157] + "..."
