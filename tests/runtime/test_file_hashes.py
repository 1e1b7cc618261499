"""A source's content hash (data.import's fingerprint, read by every status): the same digest as before for a folder,
and files not read again while their size, modification time and inode stay as they were (every `cdl status` read a
folder of 20 000 images whole, a second each time)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from runtime.steps import sources
from runtime.steps.sources import content_hash


def _old_content_hash(path: Path) -> str:
    """content_hash as it was before the cache: what workspaces' recorded fingerprints were made with."""
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode())
        h.update(hashlib.sha256(p.read_bytes()).hexdigest().encode())
    return h.hexdigest()


def _old(path: Path, seconds: float = 60) -> None:
    """Its modification time a while ago (a file written in the last two seconds is not kept in the cache)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for rel, data in (("a/b.txt", b"one"), ("a-c/d.txt", b"two"), ("a/e/f.txt", b"three"), ("z.txt", b"four"),
                      (".hidden", b"five"), ("B/x.png", b"six")):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        _old(p)
    (root / "link.txt").symlink_to(root / "z.txt")  # a link to a file: read, as rglob's is_file took it
    (root / "linked-folder").symlink_to(root / "a", target_is_directory=True)  # not followed, as rglob did not
    return root


def test_a_folders_hash_is_the_one_workspaces_recorded(folder: Path, tmp_path: Path):
    """"a/b.txt" sorts before "a-c/d.txt" as Paths did ('/' after '-' as text): another order, another digest, and
    every folder source would have read as changed."""
    want = _old_content_hash(folder)
    assert content_hash(folder) == want
    assert content_hash(folder, tmp_path / "hashes.db") == want  # filling the cache
    assert content_hash(folder, tmp_path / "hashes.db") == want  # from it
    assert content_hash(folder / "z.txt", tmp_path / "hashes.db") == _old_content_hash(folder / "z.txt")


def test_files_are_read_again_only_where_they_changed(folder: Path, tmp_path: Path, monkeypatch):
    reads: list[str] = []
    real = sources._sha256_file
    monkeypatch.setattr(sources, "_sha256_file", lambda p: reads.append(Path(p).name) or real(p))
    db = tmp_path / "hashes.db"
    first = content_hash(folder, db)
    assert len(reads) == 7  # six files and the link
    reads.clear()
    assert content_hash(folder, db) == first and reads == []
    # a file written again: read again, and the digest follows it
    (folder / "a" / "b.txt").write_bytes(b"ONE")
    _old(folder / "a" / "b.txt", 30)
    changed = content_hash(folder, db)
    assert changed != first and changed == _old_content_hash(folder) and reads == ["b.txt"]
    reads.clear()
    # one written this very moment is read each time until it is two seconds old (a second write within its
    # modification time's tick would look unchanged)
    (folder / "z.txt").write_bytes(b"FOUR")
    content_hash(folder, db)
    content_hash(folder, db)
    assert reads.count("z.txt") == 2, reads
    # a source that is one file (a zip, a CSV), in the same cache: read once
    reads.clear()
    archive = tmp_path / "news.zip"
    archive.write_bytes(b"PK" + bytes(1000))
    _old(archive)
    assert content_hash(archive, db) == content_hash(archive, db) == _old_content_hash(archive)
    assert reads == ["news.zip"] and content_hash(folder, db) == _old_content_hash(folder)


def test_the_entries_of_files_gone_from_a_folder_are_dropped(folder: Path, tmp_path: Path):
    import sqlite3

    db = tmp_path / "hashes.db"
    content_hash(folder, db)
    paths = lambda: {r[0] for r in sqlite3.connect(db).execute("SELECT path FROM hashes")}  # noqa: E731
    assert str(folder / "a" / "b.txt") in paths()
    (folder / "a" / "b.txt").unlink()
    assert content_hash(folder, db) == _old_content_hash(folder)
    assert str(folder / "a" / "b.txt") not in paths() and str(folder / "z.txt") in paths()


def test_a_damaged_or_unwritable_cache_only_means_the_files_are_read(folder: Path, tmp_path: Path):
    want = _old_content_hash(folder)
    bad = tmp_path / "hashes.db"
    bad.write_bytes(b"this is no SQLite file" * 100)
    assert content_hash(folder, bad) == want
    folder_there = tmp_path / "a-folder"  # a path SQLite cannot open (as a read-only workspace's)
    folder_there.mkdir()
    assert content_hash(folder, folder_there) == want
    assert list(folder_there.iterdir()) == []


def test_a_file_rewritten_in_place_with_its_times_put_back_is_read_again(folder: Path, tmp_path: Path):
    """Same size, same modification time (`touch -r`, `cp -p`, an editor that keeps it), same inode: only the
    status-change time, which nothing can set back, tells the new bytes from the old."""
    db = tmp_path / "hashes.db"
    target = folder / "a" / "b.txt"
    st = target.stat()
    first = content_hash(folder, db)
    assert content_hash(target, db) == _old_content_hash(target)
    time.sleep(0.05)  # past the clock tick the file system stamps change times with
    with open(target, "r+b") as fh:  # the same inode, the same size
        fh.write(b"ONE")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    now = target.stat()
    assert (now.st_size, now.st_mtime_ns, now.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    assert content_hash(folder, db) == _old_content_hash(folder) != first
    assert content_hash(target, db) == hashlib.sha256(b"ONE").hexdigest()


def test_a_cache_written_before_the_change_time_was_kept_is_taken_up(folder: Path, tmp_path: Path):
    """The cache file of an earlier version (no ctime_ns column) gets the column; its entries are read once more."""
    import sqlite3

    db = tmp_path / "hashes.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE hashes (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, inode INTEGER, "
                "sha256 TEXT)")
    z = folder / "z.txt"
    st = z.stat()
    con.execute("INSERT INTO hashes VALUES (?, ?, ?, ?, ?)", (str(z), st.st_size, st.st_mtime_ns, st.st_ino, "0" * 64))
    con.commit()
    con.close()
    assert content_hash(z, db) == _old_content_hash(z)  # the old entry's digest (a wrong one here) is not trusted
    assert content_hash(folder, db) == _old_content_hash(folder)
    cols = [r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(hashes)")]
    assert "ctime_ns" in cols
    assert sqlite3.connect(db).execute("SELECT sha256 FROM hashes WHERE path = ?", (str(z),)).fetchone()[0] == \
        _old_content_hash(z)
