"""The workspace's git repository (the thesis' Code Repository): commits and whether the tree is dirty."""

from __future__ import annotations

import subprocess
from pathlib import Path

from runtime.domain.errors import WorkspaceError

_IDENTITY = ("-c", "user.name=CDL Studio", "-c", "user.email=cdl@localhost")


class Git:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        ident: tuple[str, ...] = ()
        if args and args[0] == "commit" and not self._has_identity():
            ident = _IDENTITY
        proc = subprocess.run(
            ["git", *ident, *args], cwd=self.root, capture_output=True, text=True, check=False
        )
        if check and proc.returncode != 0:
            raise WorkspaceError(f"git {' '.join(args)} failed in {self.root}: {proc.stderr.strip()}")
        return proc

    def _has_identity(self) -> bool:
        name = subprocess.run(["git", "config", "user.name"], cwd=self.root, capture_output=True, text=True)
        mail = subprocess.run(["git", "config", "user.email"], cwd=self.root, capture_output=True, text=True)
        return bool(name.stdout.strip() and mail.stdout.strip())

    def init(self) -> None:
        self._run("init", "-q", "-b", "main")

    def add(self, *paths: str) -> None:
        self._run("add", "--", *paths)

    def commit(self, message: str, *paths: str) -> str | None:
        """Commit the given paths (or everything staged). Returns the new commit, or None if nothing changed."""
        if paths:
            self._run("add", "--", *paths)
        staged = self._run("diff", "--cached", "--quiet", check=False)
        if staged.returncode == 0 and self.head() is not None:
            return None
        self._run("commit", "-q", "--allow-empty", "-m", message)
        return self.head()

    def clean(self, path: str) -> bool:
        """Whether PATH is tracked and has no change, staged or not, against HEAD."""
        tracked = self._run("ls-files", "--error-unmatch", "--", path, check=False).returncode == 0
        return tracked and not self._run("status", "--porcelain", "--", path, check=False).stdout.strip()

    def commit_only(self, message: str, *paths: str) -> str | None:
        """Commit PATHS alone (whatever else is staged stays staged). Returns the new commit, or None if they did
        not change."""
        if not self._run("status", "--porcelain", "--", *paths, check=False).stdout.strip():
            return None
        self._run("commit", "-q", "-m", message, "--", *paths)
        return self.head()

    def head(self) -> str | None:
        proc = self._run("rev-parse", "HEAD", check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def is_dirty(self) -> bool:
        proc = self._run("status", "--porcelain", "--untracked-files=no", check=False)
        return bool(proc.stdout.strip())

    def show(self, commit: str, path: str) -> str:
        return self._run("show", f"{commit}:{path}").stdout
