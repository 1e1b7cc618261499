"""The workspace's DVC repository shared by processes: a job versioning data and the studio checking out wait for
each other instead of failing after DVC's 3 s."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from runtime.domain.errors import WorkspaceError
from runtime.workspace.dvc import Dvc

HOLD = """
import sys, time
from dvc.repo import Repo, lock_repo
repo = Repo(sys.argv[1])
with lock_repo(repo):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
repo.close()
"""


@pytest.fixture
def repo(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    d = Dvc(tmp_path)
    d.init()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("one")
    return d


def _holder(root, seconds: float) -> subprocess.Popen:  # noqa: ANN001
    """Another process (a `cdl run`, the studio) in the middle of a DVC operation for `seconds`."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(root), str(seconds)], stdout=subprocess.PIPE, text=True,
                         env={**__import__("os").environ, "DVC_NO_ANALYTICS": "1"})
    assert p.stdout.readline().strip() == "holding"
    return p


def test_add_and_checkout_wait_for_another_process(repo):
    md5, text = repo.add("data")
    (repo.root / "data" / "a.txt").write_text("two")
    repo.add("data")
    holder = _holder(repo.root, 5)  # longer than DVC's own 3 s of retries
    try:
        t0 = time.monotonic()
        repo.checkout("data", text)  # back to the first version, once the other process is done
        assert time.monotonic() - t0 > 3
        assert (repo.root / "data" / "a.txt").read_text() == "one"
        assert (repo.root / "data.dvc").read_text() == text
    finally:
        holder.wait(20)


def test_a_lock_held_too_long_is_a_clear_error(repo):
    repo.lock_timeout = 1.0
    holder = _holder(repo.root, 30)
    try:
        with pytest.raises(WorkspaceError, match=r"dvc add data failed: the DVC repository .* stayed locked for \d+ s by another"):
            repo.add("data")
    finally:
        holder.kill()
        holder.wait(10)
    assert repo.add("data")[0].endswith(".dir")  # and it works once the other process is gone
