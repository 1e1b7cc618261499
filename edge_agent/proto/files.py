"""Files written whole (a temporary file, then a rename) with the mode open() would have given them.

tempfile.mkstemp makes its file 0600, and a rename keeps that: cdl.yaml, dataset packs, artifacts and bundles
came out readable by their owner alone, where every other file of a workspace (and `cdl package -o FILE`, an
artifact meant to be copied) follows the user's umask."""

from __future__ import annotations

import os


def umask() -> int:
    """The process's umask, read without changing it (os.umask can only set it, and setting it twice races
    with other threads creating files)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def as_if_opened(fd: int) -> None:
    """Give a mkstemp file descriptor the mode a plain open() would: 0666 less the umask."""
    os.fchmod(fd, 0o666 & ~umask())
