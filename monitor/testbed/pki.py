"""Test and demo PKI through the openssl CLI: CAs, serving and client certificates, kubeconfigs, kubelet layout."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]


class PKIError(RuntimeError):
    """The openssl CLI failed or is missing."""


@dataclass(frozen=True)
class CertPair:
    """A certificate and its private key on disk (PEM)."""

    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    try:
        done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise PKIError("openssl: command not found; install the openssl package") from exc
    if done.returncode != 0:
        raise PKIError(f"openssl {args[0]} failed: {done.stderr.strip().splitlines()[-1:]}")


def make_ca(directory: Path, *, name: str = "kubesim-ca", days: int = 3650) -> CertPair:
    """Create a self-signed CA as ``NAME.crt`` / ``NAME.key`` in *directory*."""
    directory.mkdir(parents=True, exist_ok=True)
    pair = CertPair(directory / f"{name}.crt", directory / f"{name}.key")
    _openssl(
        "req", "-x509", *_CURVE, "-nodes", "-keyout", str(pair.key), "-out", str(pair.cert),
        "-days", str(days), "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return pair


def _issue(
    ca: CertPair,
    directory: Path,
    *,
    name: str,
    subject: str,
    extensions: str,
    days: int,
) -> CertPair:
    directory.mkdir(parents=True, exist_ok=True)
    pair = CertPair(directory / f"{name}.crt", directory / f"{name}.key")
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        work = Path(scratch)
        (work / "ext.cnf").write_text(extensions)
        _openssl(
            "req", "-new", *_CURVE, "-nodes", "-keyout", str(pair.key), "-out", str(work / "req.csr"),
            "-subj", subject, cwd=work,
        )  # fmt: skip
        # A random serial per certificate: two certs with the same issuer and serial confuse verifiers.
        serial = "0x" + os.urandom(12).hex()
        _openssl(
            "x509", "-req", "-in", str(work / "req.csr"), "-CA", str(ca.cert), "-CAkey", str(ca.key),
            "-set_serial", serial, "-days", str(days), "-extfile", str(work / "ext.cnf"),
            "-out", str(pair.cert), cwd=work,
        )  # fmt: skip
    pair.key.chmod(0o600)
    return pair


def make_server_cert(
    ca: CertPair,
    directory: Path,
    *,
    name: str = "apiserver",
    hosts: Sequence[str] = (),
    days: int = 365,
) -> CertPair:
    """Issue a serving certificate valid for localhost, 127.0.0.1, ::1 and *hosts* (names or IPs)."""
    sans: list[str] = []
    for host in ["localhost", "127.0.0.1", "::1", *hosts]:
        kind = "IP" if _is_ip(host) else "DNS"
        entry = f"{kind}:{host}"
        if entry not in sans:
            sans.append(entry)
    ext = (
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={','.join(sans)}\n"
    )
    return _issue(ca, directory, name=name, subject=f"/CN={name}", extensions=ext, days=days)


def shared_server_cert(directory: Path, *, name: str = "fake-kube-apiserver") -> CertPair:
    """A serving certificate signed by its own CA in *directory*: made by the first caller, reused by the rest.

    Many fake API servers share one directory, and HAProxy checks them with ``verify none``; one certificate
    for all saves the openssl runs.
    """
    pair = CertPair(directory / f"{name}.crt", directory / f"{name}.key")
    if pair.cert.exists() and pair.key.exists():
        return pair
    ca = make_ca(directory, name=f"{name}-ca", days=30)
    return make_server_cert(ca, directory, name=name, days=30)


def make_client_cert(
    ca: CertPair,
    directory: Path,
    *,
    user: str,
    groups: Sequence[str] = (),
    name: str | None = None,
    expired: bool = False,
) -> CertPair:
    """Issue a client certificate with CN=*user* and O=*groups*; ``expired=True`` makes one already expired."""
    subject = f"/CN={user}" + "".join(f"/O={g}" for g in groups)
    ext = (
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=clientAuth\n"
    )
    # openssl 3.0 has no -not_after; a negative validity ends the certificate before it starts.
    return _issue(
        ca,
        directory,
        name=name or f"client-{user}",
        subject=subject,
        extensions=ext,
        days=-1 if expired else 30,
    )


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_cert: Path,
    client: CertPair | None = None,
    client_cert_file: Path | None = None,
    client_key_file: Path | None = None,
    token: str | None = None,
    embed: bool = False,
    user: str = "monitor",
) -> Path:
    """Write a kubeconfig for *server*: client-cert (a pair, or explicit files) or token auth.

    ``embed=True`` inlines every file as ``*-data`` (base64), like ``kubectl config view --raw --flatten``.
    """
    cert_file = client_cert_file or (client.cert if client else None)
    key_file = client_key_file or (client.key if client else None)
    cluster: dict[str, str] = {"server": server}
    user_entry: dict[str, str] = {}
    if embed:
        cluster["certificate-authority-data"] = _b64(ca_cert)
        if cert_file and key_file:
            user_entry["client-certificate-data"] = _b64(cert_file)
            user_entry["client-key-data"] = _b64(key_file)
    else:
        cluster["certificate-authority"] = str(ca_cert)
        if cert_file and key_file:
            user_entry["client-certificate"] = str(cert_file)
            user_entry["client-key"] = str(key_file)
    if token is not None:
        user_entry["token"] = token
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sim", "cluster": cluster}],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": user}}],
        "current-context": "sim",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    # JSON is YAML: the kubeconfig loader reads it and no YAML writer is needed.
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.chmod(0o600)
    os.replace(tmp, path)
    return path


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


@dataclass(frozen=True)
class KubeletPKI:
    """The kubelet's client-certificate layout: ``kubelet-client-current.pem`` is a symlink to cert+key in one file."""

    directory: Path
    ca: CertPair

    @property
    def current(self) -> Path:
        return self.directory / "kubelet-client-current.pem"

    def rotate(self, *, user: str, expired: bool = False) -> Path:
        """Issue a new certificate for *user* and swap the ``current`` symlink to it atomically."""
        with tempfile.TemporaryDirectory(dir=self.directory) as scratch:
            pair = make_client_cert(self.ca, Path(scratch), user=user, expired=expired, name="issued")
            return self.install(pair)

    def install(self, pair: CertPair) -> Path:
        """Write *pair* (issued earlier) as a new ``kubelet-client-<stamp>.pem`` and swap ``current`` to it, as
        the kubelet does; without openssl, for runs that rotate a thousand times."""
        stamp = time.strftime("%Y-%m-%d-%H-%M-%S") + f"-{os.urandom(3).hex()}"
        target = self.directory / f"kubelet-client-{stamp}.pem"
        target.write_bytes(pair.cert.read_bytes() + pair.key.read_bytes())
        target.chmod(0o600)
        link_tmp = self.directory / f".kubelet-client-current.{stamp}"
        link_tmp.symlink_to(target.name)
        os.replace(link_tmp, self.current)
        return target


def make_kubelet_pki(directory: Path, *, ca: CertPair, user: str) -> KubeletPKI:
    """Create the kubelet layout in *directory* with a first certificate for *user*."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = KubeletPKI(directory=directory, ca=ca)
    pki.rotate(user=user)
    return pki
