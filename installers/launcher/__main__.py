"""CDL Studio one-file launcher (a Python zipapp made by `make dist`: dist/cdl-studio.pyz).

    python3.11 cdl-studio.pyz                      # first start installs, then opens the studio
    python3.11 cdl-studio.pyz run --until data.label   # any `cdl` command
    python3.11 cdl-studio.pyz --entry cdl-edge serve --data-dir DIR
    options: --home DIR (default $XDG_DATA_HOME/cdl-studio), --extras all|edge|... , --reinstall

The wheel travels inside this file. On the first start (or when the wheel or the extras change) the launcher
makes a virtual environment under --home and installs the wheel with its dependencies from the package index
(pip's own settings apply); afterwards it starts the command at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ENTRIES = ("cdl", "cdl-edge")


def _say(msg: str) -> None:
    print(f"cdl-studio launcher: {msg}", file=sys.stderr, flush=True)


def _parse(argv: list[str]) -> tuple[dict, list[str]]:
    opts = {"home": None, "extras": "all", "entry": "cdl", "reinstall": False}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest += argv[i + 1:]
            break
        if a in ("--home", "--extras", "--entry") and i + 1 < len(argv):
            opts[a[2:]] = argv[i + 1]
            i += 2
            continue
        if a == "--reinstall":
            opts["reinstall"] = True
            i += 1
            continue
        rest += argv[i:]
        break
    if opts["entry"] not in ENTRIES:
        sys.exit(f"cdl-studio launcher: --entry must be one of {', '.join(ENTRIES)}, got {opts['entry']!r}")
    return opts, rest


def _wheel(archive: Path) -> tuple[str, bytes]:
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if n.startswith("wheels/") and n.endswith(".whl")]
        if len(names) != 1:
            sys.exit("cdl-studio launcher: this file holds no wheel; rebuild it with `make dist`")
        return Path(names[0]).name, zf.read(names[0])


def main(argv: list[str] | None = None) -> int:
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"cdl-studio launcher: CDL Studio needs Python 3.11; this is {sys.version.split()[0]} "
                 f"({sys.executable}). Run it with python3.11.")
    opts, rest = _parse(list(sys.argv[1:] if argv is None else argv))
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    home = Path(opts["home"] or data / "cdl-studio").expanduser()
    name, blob = _wheel(Path(__file__).parent)  # __file__ is ARCHIVE.pyz/__main__.py
    want = {"wheel": name, "sha256": hashlib.sha256(blob).hexdigest(), "extras": opts["extras"]}
    venv = home / "venv"
    stamp = home / "installed.json"
    have = json.loads(stamp.read_text()) if stamp.exists() else None
    if opts["reinstall"] or have != want:
        _say(f"installing {name} [{opts['extras']}] into {venv} (first start or a new version; the full "
             "studio is about 4 GB and takes a few minutes)")
        if venv.exists():
            shutil.rmtree(venv)
        home.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        with tempfile.TemporaryDirectory() as tmp:
            whl = Path(tmp) / name
            whl.write_bytes(blob)
            spec = f"{whl}[{opts['extras']}]" if opts["extras"] else str(whl)
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", spec]
            if subprocess.run(pip).returncode != 0:
                sys.exit(f"cdl-studio launcher: installing into {venv} failed (see pip's message above); "
                         "nothing is marked installed, the next start tries again")
        tmp_stamp = stamp.with_suffix(".tmp")
        tmp_stamp.write_text(json.dumps(want))
        os.replace(tmp_stamp, stamp)
        _say("installed")
    exe = venv / "bin" / opts["entry"]
    args = rest or (["studio"] if opts["entry"] == "cdl" else ["--help"])
    os.execv(str(exe), [str(exe), *args])
    return 0


if __name__ == "__main__":
    sys.exit(main())
