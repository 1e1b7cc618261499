"""The workspace's ed25519 signing key for bundles (`.cdl/keys/`, owner-only, never committed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from runtime.domain.errors import CdlError


def key_files(root: Path) -> tuple[Path, Path]:
    """(private key, public key) files of the workspace's bundle-signing key."""
    d = Path(root) / ".cdl" / "keys"
    return d / "bundle-signing.pem", d / "bundle-signing.pub.pem"


def signing_key(root: Path, trusted_by: Sequence[str] = ()) -> tuple[bytes, bytes]:
    """(private PEM, public PEM); created on first use. `trusted_by`: the devices that trust the workspace's key
    (enrolled with its public key): with any, a key that is gone is not made anew, since every bundle signed
    with a new key would be refused on them (a lost key was replaced without a word, and the next push failed
    on the device with a signature error). A public key file that is gone is derived from the private key (it
    was made anew with a new private key over the old one)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from runtime.pki import _replace, _write_private, created_once

    priv_path, pub_path = key_files(root)
    d = priv_path.parent

    def public(key: Ed25519PrivateKey) -> bytes:
        return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    if not priv_path.exists() and trusted_by:
        raise CdlError(f"{priv_path} is gone, and {', '.join(trusted_by)} trust(s) only the key it held: bundles "
                       "signed with a new key would be refused there. Restore .cdl/keys/ from a backup (`cdl backup` "
                       "archives keep it), or trust a new key by enrolling each device again (`cdl devices enroll "
                       "NAME --address HOST:PORT --replace`, which makes one)")
    if not (priv_path.exists() and pub_path.exists()):
        with created_once(d):  # processes starting at once on a new workspace sign with one key between them
            if not priv_path.exists():
                key = Ed25519PrivateKey.generate()
                _write_private(priv_path, key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
                _replace(pub_path, public(key))
            elif not pub_path.exists():
                _replace(pub_path, public(_load(priv_path)))
    priv = priv_path.read_bytes()
    _load(priv_path, priv)
    return priv, pub_path.read_bytes()


def _load(path: Path, pem: bytes | None = None):  # noqa: ANN202
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes() if pem is None else pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CdlError(f"{path}: not a private key ({str(exc).split('.')[0]}): restore .cdl/keys/ from a backup "
                       "(`cdl backup` archives keep it)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CdlError(f"{path}: an {type(key).__name__}, not the ed25519 key bundles are signed with")
    return key
