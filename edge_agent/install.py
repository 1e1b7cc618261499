"""`cdl-edge install BUNDLE --data-dir DIR`: a bundle file put on the device by hand (a device the workstation
cannot reach: a USB stick, a site's own file transfer), stored and activated as a push stores and activates it.

The same checks as PushBundle: the workspace's signature (agent.json's trusted keys), every member's sha256, no
member path outside the bundle's folder, room on the disk for the journal; then the model is loaded before it is
made active (atomically, under the folder's lock), so a bundle whose model does not load changes nothing. An agent
running from the folder serves it at its next request (every worker follows active.json). The workstation learns of
it at its next health check (`cdl devices status`); the deployment history has no entry, the push not being its.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_agent.config import AgentConfig, ConfigError
from edge_agent.proto.bundle import BundleError
from edge_agent.slots import Slots


def install(data_dir: Path, bundle: Path, activate: bool = True) -> dict[str, Any]:
    """Store (and activate) `bundle` in the agent folder `data_dir`: {"bundle_id", "name", "version", "variant",
    "activated", "previous"}. ConfigError for a folder that is no agent's, BundleError for a bundle refused."""
    cfg = AgentConfig.load(data_dir)
    try:
        data = Path(bundle).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{bundle}: cannot read it ({exc.strerror or exc})") from None
    slots = Slots(cfg.data_dir, cfg.trusted_keys, clean=False)  # a running agent's worker 0 tidies the folder
    short = slots.space_for(len(data), 0, cfg.min_free_bytes)
    if short:
        raise BundleError(short)
    try:
        bundle_id = slots.store_bytes(data)
    except BundleError as exc:
        raise BundleError(f"{bundle}: refused, nothing was stored: {exc}") from None
    manifest = slots.manifest(bundle_id)
    out = {"bundle_id": bundle_id, "name": manifest["name"], "version": str(manifest["version"]),
           "variant": manifest["variant"], "activated": False, "previous": slots.state().get("current")}
    if activate:
        from edge_agent.inference.model import LoadedModel

        try:
            LoadedModel(bundle_id, slots.path(bundle_id), manifest)
        except Exception as exc:  # noqa: BLE001 - what onnxruntime says of a model it cannot load
            raise BundleError(f"{bundle}: stored, but its model does not load; the active model stays: {exc}") from None
        slots.activate(bundle_id)
        out["activated"] = True
    slots.prune(cfg.keep_bundles, protect=(bundle_id,))
    return out


def rollback(data_dir: Path) -> dict[str, Any]:
    """Make the previous model active again in the agent folder `data_dir`, on the device itself (the workstation's
    `cdl rollback` needs the device to answer over the network): {"bundle_id", "name", "version", "variant",
    "replaced"}. The previous model is loaded first, so one that does not load changes nothing; the switch is
    atomic, under the folder's lock, and the model it replaces becomes the previous one (a second rollback goes
    back). ConfigError for a folder that is no agent's, BundleError where there is nothing to roll back to."""
    cfg = AgentConfig.load(data_dir)
    slots = Slots(cfg.data_dir, cfg.trusted_keys, clean=False, make_dirs=False)  # no root-owned bundles/ left
    st = slots.state()
    if st.get("damaged"):
        raise BundleError(f"active.json cannot be read ({st['damaged']}): nothing to roll back from; install a "
                          "bundle (`cdl-edge install FILE`) or push one")
    prev = st.get("previous")
    if not prev:
        raise BundleError("nothing to roll back to: no previous model on this device")
    try:
        manifest = slots.manifest(prev)
    except (OSError, ValueError) as exc:
        raise BundleError(f"the previous model's bundle {prev[:12]} is gone or damaged ({exc}); nothing changed") \
            from None
    from edge_agent.inference.model import LoadedModel

    try:
        LoadedModel(prev, slots.path(prev), manifest)
    except Exception as exc:  # noqa: BLE001 - what onnxruntime says of a model it cannot load
        raise BundleError(f"the previous model {manifest['name']}:{manifest['version']}:{manifest['variant']} does "
                          f"not load, so the active model stays: {exc}") from None
    slots.rollback(expect_previous=prev)
    return {"bundle_id": prev, "name": manifest["name"], "version": str(manifest["version"]),
            "variant": manifest["variant"], "replaced": st.get("current")}
