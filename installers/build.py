"""`make dist`: build what we ship into dist/.

- cdl_studio-VERSION-py3-none-any.whl: the Python package (the studio, the runtime and the edge agent; extras
  pick what gets installed: [all] for the workstation, [edge] for a device);
- cdl-studio.pyz: the one-file launcher (a zipapp holding the wheel; see installers/launcher);
- cdl-studio-VERSION-linux-desktop.tar.gz: the launcher, a desktop entry, its icon and install-desktop.sh;
- cdl-edge-VERSION.tar.gz: the edge agent package: the wheel, install.sh, the systemd unit and the Containerfile;
- SHA256SUMS.

Usage: python installers/build.py [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipapp
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _add(tar: tarfile.TarFile, path: Path, arcname: str, mode: int = 0o644) -> None:
    info = tar.gettarinfo(str(path), arcname)
    info.mode = mode
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    with open(path, "rb") as fh:
        tar.addfile(info, fh)


def build_wheel(out: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        # build from a copy, so the checkout gets no build/ or egg-info folders
        src = Path(tmp) / "src"
        ignore = shutil.ignore_patterns(".venv", ".git", "__pycache__", "build", "dist", "*.egg-info",
                                        "bench-results", "screenshots", "demo-workspace", ".whl", ".gl")
        shutil.copytree(ROOT, src, ignore=ignore, symlinks=True)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "--disable-pip-version-check", "-w", str(out), str(src)], check=True)
    wheels = sorted(out.glob("cdl_studio-*.whl"))
    if not wheels:
        raise SystemExit("build.py: pip made no wheel")
    return wheels[-1]


def build_launcher(wheel: Path, out: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "app"
        (d / "wheels").mkdir(parents=True)
        shutil.copy2(ROOT / "installers" / "launcher" / "__main__.py", d / "__main__.py")
        shutil.copy2(wheel, d / "wheels" / wheel.name)
        target = out / "cdl-studio.pyz"
        zipapp.create_archive(d, target, interpreter="/usr/bin/env python3.11", compressed=True)
    target.chmod(0o755)
    return target


def build_desktop(pyz: Path, version: str, out: Path) -> Path:
    target = out / f"cdl-studio-{version}-linux-desktop.tar.gz"
    base = f"cdl-studio-{version}"
    desk = ROOT / "installers" / "desktop"
    with tarfile.open(target, "w:gz") as tar:
        _add(tar, pyz, f"{base}/cdl-studio.pyz", 0o755)
        _add(tar, desk / "cdl-studio.desktop", f"{base}/cdl-studio.desktop")
        _add(tar, desk / "cdl-studio.svg", f"{base}/cdl-studio.svg")
        _add(tar, desk / "install-desktop.sh", f"{base}/install-desktop.sh", 0o755)
    return target


def build_edge(wheel: Path, version: str, out: Path) -> Path:
    target = out / f"cdl-edge-{version}.tar.gz"
    base = f"cdl-edge-{version}"
    edge = ROOT / "installers" / "edge"
    with tarfile.open(target, "w:gz") as tar:
        _add(tar, wheel, f"{base}/{wheel.name}")
        _add(tar, edge / "install.sh", f"{base}/install.sh", 0o755)
        _add(tar, edge / "cdl-edge.service", f"{base}/cdl-edge.service")
        _add(tar, edge / "Containerfile", f"{base}/Containerfile")
        readme = (f"CDL Studio edge agent {version}\n\nsudo ./install.sh /path/to/enrolled-folder "
                  f"./{wheel.name}\n\nor: pip install \"./{wheel.name}[edge]\" && cdl-edge serve --data-dir DIR "
                  "(it listens on the port the device was enrolled at: agent.json's listen)\n").encode()
        info = tarfile.TarInfo(f"{base}/README.txt")
        info.size, info.mode = len(readme), 0o644
        tar.addfile(info, io.BytesIO(readme))
    return target


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "dist")
    out = ap.parse_args().out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("cdl*"):
        old.unlink()
    wheel = build_wheel(out)
    version = wheel.name.split("-")[1]
    pyz = build_launcher(wheel, out)
    made = [wheel, pyz, build_desktop(pyz, version, out), build_edge(wheel, version, out)]
    sums = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in made)
    (out / "SHA256SUMS").write_text(sums)
    for p in made:
        print(f"{p.relative_to(out.parent) if out.parent in p.parents else p}  {p.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
