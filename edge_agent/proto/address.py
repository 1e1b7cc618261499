"""HOST:PORT as the agent listens on it and the workspace records it: one rule for both sides."""

from __future__ import annotations


def split_address(address: str, example: str = "0.0.0.0:8001") -> tuple[str, int]:
    """(host, port) of HOST:PORT, or ValueError saying what is wrong. An out-of-range port is refused here:
    gRPC takes it as "any free port", and the agent would listen where nobody looks. Port 0 (any free port) is
    allowed: tests and ad-hoc agents ask for it on purpose."""
    if "://" in address:  # "http://10.0.0.7:8001" was taken, the host being "http://10.0.0.7"
        raise ValueError(f"give HOST:PORT without a scheme (the agent speaks gRPC over TLS), such as {example}")
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port:
        raise ValueError(f"expected HOST:PORT, such as {example}")
    if any(c in host for c in "/@ \t"):
        raise ValueError(f"{host!r} is not a host name or address (expected HOST:PORT, such as {example})")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"the port must be a number from 0 to 65535 (0: any free port), got {port!r}")
    return host, int(port)


_ANY = {"0.0.0.0", "::", "[::]", ""}
DEFAULT_LISTEN = "0.0.0.0:8001"  # Triton's gRPC port, where agent.json names none
_LOOPBACK = ("127.", "localhost", "::1", "[::1]")


def listen_for(address: str) -> str:
    """Where an agent enrolled at ADDRESS listens (agent.json's `listen`): the enrolled port on every interface,
    as Triton does (the enrolled host may be a name or an address the device does not bind, behind NAT), and on
    the loopback where it was enrolled on the loopback (an agent for this machine alone stays there)."""
    host, port = split_address(address)
    if host.startswith(_LOOPBACK):
        return f"{host}:{port}"
    return f"[::]:{port}" if ":" in host.strip("[]") else f"0.0.0.0:{port}"


def clash(listeners: dict[str, str | None]) -> str | None:
    """Two of the agent's own listeners ({"--listen": "0.0.0.0:8001", "--http": ..., "--metrics": ...}) on one
    port of one host (or of every host): what to say, or None. The agent failed at its start, on the device, with
    "the port is in use (another agent, or another program ...)", where the other program was itself."""
    seen: list[tuple[str, str, int]] = []
    for flag, address in listeners.items():
        if not address:
            continue
        host, port = split_address(address)
        for other, ohost, oport in seen:
            if port and port == oport and (host == ohost or host in _ANY or ohost in _ANY):
                return (f"{flag} {address}: {other} is on port {port} too, and the agent serves one thing a port; "
                        "give it another port")
        seen.append((flag, host, port))
    return None
