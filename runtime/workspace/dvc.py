"""The real DVC, driven through its Python API (imported lazily: it takes half a second).

A dataset version is one DVC-tracked directory, `data/dataset`, whose `.dvc` file is committed to git and
also kept in the registry, so any version can be checked out again without walking git history.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
from pathlib import Path

import yaml

from runtime.domain.errors import WorkspaceError

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@contextlib.contextmanager
def _quiet():
    """DVC prints hints ("To track the changes with git...") to stdout; keep our output clean."""
    from dvc.ui import ui

    out, err = io.StringIO(), io.StringIO()
    was = ui._enabled
    ui._enabled = False
    logger = logging.getLogger("dvc")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        ui._enabled = was
        logger.setLevel(level)


class Dvc:
    lock_timeout = 120.0  # seconds to wait for another process's DVC operation on this repository

    def __init__(self, root: Path):
        self.root = Path(root)

    def _locked(self, what: str, fn):  # noqa: ANN001, ANN202
        """Run `fn(repo)` holding the repository's lock (so what fn writes and reads around DVC's own calls is
        its own). DVC gives up on a held lock after 3 s, while adding a large dataset holds it much longer (a
        job versioning data while the studio checks out): this waits, up to `lock_timeout`, as a second `dvc`
        command with `--wait-for-lock` would."""
        from dvc.lock import LockError
        from dvc.repo import lock_repo

        start = time.monotonic()
        while True:
            try:
                with _quiet():
                    repo = self._repo()
                    try:
                        with lock_repo(repo):
                            return fn(repo)
                    finally:
                        repo.close()
            except LockError:
                waited = time.monotonic() - start  # DVC itself tries for 3 s each time
                if waited >= self.lock_timeout:
                    raise WorkspaceError(f"{what} failed: the DVC repository {self.root} stayed locked for "
                                         f"{waited:.0f} s by another dvc or cdl process") from None
                time.sleep(0.5)
            except WorkspaceError:
                raise
            except Exception as exc:  # DVC raises many types; the user needs the message
                raise WorkspaceError(f"{what} failed: {exc}") from exc

    def _repo(self):
        from dvc.repo import Repo

        return Repo(str(self.root))

    def init(self) -> None:
        from dvc.repo import Repo

        with _quiet():
            Repo.init(str(self.root))
        # Copies, never links: files in data/ may be rewritten by an ingest while the cache holds old versions.
        cfg = self.root / ".dvc" / "config"
        text = cfg.read_text() if cfg.exists() else ""
        if "[cache]" not in text:
            cfg.write_text(text + "[core]\n    autostage = false\n[cache]\n    type = copy\n")

    def add(self, target: str) -> tuple[str, str]:
        """`dvc add target`; returns (md5 of the directory, text of the .dvc file)."""
        dvc_file = self.root / f"{target}.dvc"

        def add(repo) -> str:  # noqa: ANN001
            repo.add(str(self.root / target))
            return dvc_file.read_text()

        text = self._locked(f"dvc add {target}", add)
        doc = yaml.safe_load(text)
        return doc["outs"][0]["md5"], text

    def checkout(self, target: str, dvc_file_text: str) -> None:
        """Restore `target` to the state described by a .dvc file's text (from the registry)."""
        dvc_file = self.root / f"{target}.dvc"

        def checkout(repo) -> None:  # noqa: ANN001
            dvc_file.write_text(dvc_file_text)
            repo.checkout(targets=[str(dvc_file)], force=True)

        self._locked(f"dvc checkout {target}", checkout)

    # -- remotes: every dataset version's data, backed up and fetched back -----------------------------------

    def remotes(self) -> dict[str, str]:
        """{name: url} of the DVC remotes, the default one first: read from the repository's .dvc/config and
        .dvc/config.local (the later one wins) without importing DVC, which the studio, listing the versions,
        must not load (asking DVC's Repo for its config did)."""
        conf: dict[str, dict[str, str]] = {}
        for f in (self.root / ".dvc" / "config", self.root / ".dvc" / "config.local"):
            try:
                text = f.read_text()
            except OSError:
                continue
            section = None
            for raw in text.splitlines():
                line = raw.strip()
                if not line or line.startswith(("#", ";")):
                    continue
                if line.startswith("[") and line.endswith("]"):
                    section = line[1:-1].strip().strip("'").strip()
                    conf.setdefault(section, {})
                elif section is not None and "=" in line:
                    key, _, value = line.partition("=")
                    conf[section][key.strip()] = value.strip()
        default = conf.get("core", {}).get("remote")
        found = {}
        for section, values in conf.items():
            kind, _, name = section.partition(" ")
            if kind == "remote" and name.startswith('"') and name.endswith('"') and "url" in values:
                url = values["url"]
                if "://" not in url and not os.path.isabs(url):  # DVC reads a folder relative to .dvc/
                    url = os.path.normpath(os.path.join(self.root / ".dvc", url))
                found[name[1:-1]] = url
        return {n: found[n] for n in sorted(found, key=lambda n: (n != default, n))}

    def add_remote(self, name: str, url: str, default: bool = True) -> None:
        """`dvc remote add [-d] NAME URL`, in .dvc/config (the repository's, committed with it)."""
        def add(repo) -> None:  # noqa: ANN001
            with repo.config.edit("repo") as conf:
                conf["remote"][name] = {"url": url}
                if default:
                    conf["core"]["remote"] = name

        self._locked(f"dvc remote add {name}", add)

    def remove_remote(self, name: str, new_default: str | None = None) -> None:
        """`dvc remote remove NAME`, from .dvc/config; where it was the default, `new_default` (or none) is."""
        def remove(repo) -> None:  # noqa: ANN001
            with repo.config.edit("repo") as conf:
                conf["remote"].pop(name, None)
                if conf["core"].get("remote") == name:
                    if new_default:
                        conf["core"]["remote"] = new_default
                    else:
                        del conf["core"]["remote"]

        self._locked(f"dvc remote remove {name}", remove)

    def transfer(self, direction: str, versions: dict[str, str], remote: str | None = None) -> dict[str, int]:
        """Push every given version's objects ({version id: its .dvc file's text}) from the cache to a remote, or
        fetch them from it into the cache ("fetch"), version by version; {version id: objects transferred}.

        `dvc push --all-commits` would walk git, but a version's .dvc file is the registry's to keep: each one is
        written, for the length of the call, under data/.cdl-transfer/ (DVC refuses targets git ignores), and
        DVC moves exactly what it names."""
        import shutil

        from dvc.config import NoRemoteError

        tmp = self.root / "data" / ".cdl-transfer"

        def run(repo) -> dict[str, int]:  # noqa: ANN001
            shutil.rmtree(tmp, ignore_errors=True)
            out: dict[str, int] = {}
            try:
                for vid, text in versions.items():
                    f = tmp / vid / "dataset.dvc"
                    f.parent.mkdir(parents=True)
                    f.write_text(text)
                    try:
                        if direction == "push":
                            out[vid] = int(repo.push(targets=[str(f)], remote=remote) or 0)
                        else:
                            out[vid] = int(repo.fetch(targets=[str(f)], remote=remote) or 0)
                    except NoRemoteError:
                        raise WorkspaceError(f"no DVC remote to {direction} {'to' if direction == 'push' else 'from'}:"
                                             " add one with `cdl data remote add NAME URL` (a folder, s3://, ssh://, "
                                             "...)") from None
                    except Exception as exc:  # noqa: BLE001 - DVC's many errors; which version matters
                        raise WorkspaceError(f"dvc {direction} of {vid} failed: {exc}") from exc
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return out

        return self._locked(f"dvc {direction}", run)

    def missing_on_remote(self, url: str, dir_md5: str) -> int | None:
        """How many objects of a tracked directory version a folder remote lacks (its .dir listing counts); None
        for a remote that is not a folder (s3://, ssh://, ...): telling would take the network."""
        if "://" in url and not url.startswith("file://"):
            return None
        base = Path(url.removeprefix("file://")) / "files" / "md5"

        def there(md5: str) -> bool:
            return (base / md5[:2] / md5[2:]).exists()

        if not there(dir_md5 if dir_md5.endswith(".dir") else dir_md5 + ".dir"):
            try:
                return len(self.listing(dir_md5)) + 1
            except (WorkspaceError, OSError, ValueError):
                return 1
        try:
            listing = self.listing(dir_md5)
        except (WorkspaceError, OSError, ValueError):
            return 0  # the remote has the listing and the cache lacks it: what is there cannot be counted here
        return sum(1 for md5 in listing.values() if not there(md5))

    def missing(self, dir_md5: str) -> int:
        """How many objects of a tracked directory version are not in the cache (the listing itself counts)."""
        try:
            listing = self.listing(dir_md5)
        except WorkspaceError:
            return 1
        n = 0
        for md5 in listing.values():
            try:
                self.cache_file(md5)
            except WorkspaceError:
                n += 1
        return n

    def cache_file(self, md5: str) -> Path:
        md5 = md5.removesuffix(".dir")
        base = self.root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
        if base.exists():
            return base
        with_dir = base.with_name(base.name + ".dir")
        if with_dir.exists():
            return with_dir
        raise WorkspaceError(f"DVC cache has no object {md5} (was the cache removed? `cdl data pull` fetches every "
                             "version from the DVC remote)")

    def listing(self, dir_md5: str) -> dict[str, str]:
        """relpath -> md5 for every file of a tracked directory version."""
        path = self.cache_file(dir_md5)
        if not path.name.endswith(".dir"):
            path = path.with_name(path.name + ".dir") if not path.exists() else path
        entries = json.loads(path.read_text())
        return {e["relpath"]: e["md5"] for e in entries}

    def open_member(self, dir_md5: str, relpath: str) -> Path:
        listing = self.listing(dir_md5)
        if relpath not in listing:
            raise WorkspaceError(f"dataset version {dir_md5} has no file {relpath}")
        return self.cache_file(listing[relpath])
