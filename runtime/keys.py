"""The workspace's ed25519 signing key for bundles (`.cdl/keys/`, owner-only, never committed)."""

from __future__ import annotations

import os
from pathlib import Path


def signing_key(root: Path) -> tuple[bytes, bytes]:
    """(private PEM, public PEM); created on first use."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    d = Path(root) / ".cdl" / "keys"
    priv_path, pub_path = d / "bundle-signing.pem", d / "bundle-signing.pub.pem"
    if not priv_path.exists():
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        key = Ed25519PrivateKey.generate()
        priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
        pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        tmp = priv_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(priv)
        os.replace(tmp, priv_path)
        pub_path.write_bytes(pub)
    return priv_path.read_bytes(), pub_path.read_bytes()
