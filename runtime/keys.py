"""The workspace's ed25519 signing key for bundles (`.cdl/keys/`, owner-only, never committed)."""

from __future__ import annotations

from pathlib import Path


def signing_key(root: Path) -> tuple[bytes, bytes]:
    """(private PEM, public PEM); created on first use."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from runtime.pki import _replace, _write_private, created_once

    d = Path(root) / ".cdl" / "keys"
    priv_path, pub_path = d / "bundle-signing.pem", d / "bundle-signing.pub.pem"
    if not (priv_path.exists() and pub_path.exists()):
        with created_once(d):  # processes starting at once on a new workspace sign with one key between them
            if not (priv_path.exists() and pub_path.exists()):
                key = Ed25519PrivateKey.generate()
                priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
                pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
                _write_private(priv_path, priv)
                _replace(pub_path, pub)
    return priv_path.read_bytes(), pub_path.read_bytes()
