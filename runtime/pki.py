"""The workspace's small certificate authority for edge devices (`.cdl/pki/`, owner-only)."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path


def _replace(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file whole (a temporary file renamed over it): a reader sees the old bytes or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _write_private(path: Path, data: bytes) -> None:
    _replace(path, data, 0o600)


@contextlib.contextmanager
def created_once(folder: Path):  # noqa: ANN201
    """An exclusive lock on FOLDER/.create.lock while a key (or CA) is made in it, so that processes starting at
    once on a new workspace make one between them: each checks again under the lock before making its own. The
    folder is owner-only."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    with open(folder / ".create.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _key():  # noqa: ANN202
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:  # noqa: ANN001
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def ca_files(root: Path) -> tuple[Path, Path]:
    """(key, certificate) files of the workspace CA."""
    d = Path(root) / ".cdl" / "pki"
    return d / "ca.key", d / "ca.crt"


def ca(root: Path, trusted_by: Sequence[str] = ()) -> tuple[bytes, bytes]:
    """(CA key PEM, CA certificate PEM), created on first use. `trusted_by`: the enrolled devices, whose
    certificates the CA signed: with any, a CA that is gone is not made anew (every call to them then failed
    its TLS handshake, as "cannot reach it over TLS"); enrolling a device again makes one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key_path, crt_path = ca_files(root)
    d = key_path.parent
    gone = [p for p in (key_path, crt_path) if not p.exists()]
    if gone and trusted_by:
        from runtime.domain.errors import CdlError

        raise CdlError(f"{' and '.join(map(str, gone))} {'is' if len(gone) == 1 else 'are'} gone: the workspace CA "
                       f"that signed the certificates of {', '.join(trusted_by)}, which a new CA would not verify. "
                       "Restore .cdl/pki/ from a backup (`cdl backup` archives keep it), or enroll each device again "
                       "(`cdl devices enroll NAME --address HOST:PORT --replace`, which makes a new CA)")
    if gone:
        with created_once(d):  # two processes on a new workspace (two `cdl serve`, two enrolls) make one CA
            if not (key_path.exists() and crt_path.exists()):
                key = _key()
                name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                     f"CDL Studio workspace CA ({Path(root).name})")])
                now = dt.datetime.now(dt.UTC)
                cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                        .not_valid_after(now + dt.timedelta(days=3650))
                        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                        .sign(key, hashes.SHA256()))
                _write_private(key_path, _pem_key(key))
                _replace(crt_path, cert.public_bytes(serialization.Encoding.PEM))
    return key_path.read_bytes(), crt_path.read_bytes()


DEVICE_CERT_DAYS = 825  # the longest a publicly trusted TLS certificate was allowed (CA/Browser Forum, 2018-2020)


def device_certificate(root: Path, device: str, hosts: list[str], days: float = DEVICE_CERT_DAYS,
                       trusted_by: Sequence[str] = ()) -> tuple[bytes, bytes, str]:
    """(key PEM, certificate PEM, sha256 fingerprint) of a device's TLS server certificate, valid for `days`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key_pem, ca_crt_pem = ca(root, trusted_by)
    ca_key = serialization.load_pem_private_key(ca_key_pem, None)
    ca_crt = x509.load_pem_x509_certificate(ca_crt_pem)
    key = _key()
    sans: list[x509.GeneralName] = []
    for h in dict.fromkeys([*hosts, "localhost", "127.0.0.1"]):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    now = dt.datetime.now(dt.UTC)
    until = now + dt.timedelta(days=days)
    since = min(now - dt.timedelta(minutes=5), until - dt.timedelta(days=1))  # days <= 0: one that has expired
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device)]))
            .issuer_name(ca_crt.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(since).not_valid_after(until)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _pem_key(key), cert.public_bytes(serialization.Encoding.PEM), cert.fingerprint(hashes.SHA256()).hex()


def certificate_expiry(path: Path, fingerprint: str) -> dt.datetime | None:
    """When the certificate in `path` expires, if it is the one with this sha256 fingerprint (None: the file is
    gone, unreadable or another certificate)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError):
        return None
    if cert.fingerprint(hashes.SHA256()).hex() != fingerprint:
        return None
    return cert.not_valid_after_utc
