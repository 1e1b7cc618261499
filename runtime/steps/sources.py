"""Readers for every data source `data.import` accepts. Each reads the whole source and checks it before
anything is written; a problem raises DataImportError naming the file (and member, row or task).

Kinds:
- text-folder: a zip or folder of class subfolders of text files (the BBC layout); the label is the folder;
- image-folder: a zip or folder of class subfolders of image files;
- idx: Zalando/LeCun idx files (`*-images-idx3-ubyte[.gz]` with `*-labels-idx1-ubyte[.gz]`), a folder or one
  images file; `train*` files are the source's train split, `t10k*`/`test*` its test split;
- csv: a CSV (or TSV) with a text column and a label column;
- jsonl: JSON Lines (`.jsonl`, `.ndjson`, gzipped or not; what `datasets.Dataset.to_json` writes): one object per
  line with a text field, a label field (a string or a number) and optionally a `split` of train or test;
- label-studio: a Label Studio JSON or JSON_MIN export (text tasks, or image tasks whose files are found).
"""

from __future__ import annotations

import base64
import csv
import functools
import gzip
import hashlib
import io
import json
import math
import os
import re
import struct
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from runtime.domain.errors import DataImportError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CLASS_NAME_PRESETS = {
    "fashion-mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
    "mnist": [str(i) for i in range(10)],
}
UNLABELED_HINT = ", or import the items unlabeled, for the labeling queue, with --unlabeled"
# in order of preference; the last ones are short texts, taken where nothing longer is there (a CSV of news
# headlines, "headline,category", needed --text-column)
TEXT_COLUMNS = ("text", "content", "body", "article", "document", "review", "sentence", "abstract", "description",
                "summary", "comment", "message", "tweet", "question", "headline", "title")
LABEL_COLUMNS = ("label", "category", "class", "target", "y")


@dataclass
class RawItem:
    key: str  # location inside the source (member path, row, task)
    payload: bytes | None  # bytes for text and image files; None for array rows
    label: str | None
    split: str | None = None
    # (label, labeler, source) from annotations: source "import", or "manual" for a decision (Label Studio's
    # ground truth, a labeler's label CDL Studio exported)
    labels: list[tuple[str, str, str]] = field(default_factory=list)
    skips: list[str] = field(default_factory=list)  # labelers who skipped it


@dataclass
class SourceBatch:
    """Everything one source contributes, read and checked, not yet written."""

    name: str
    kind: str  # text-folder | image-folder | idx | csv | label-studio
    item_kind: str  # text | image
    content_hash: str
    items: list[RawItem]
    array: np.ndarray | None = None  # idx: the images, one row per item (same order as items)
    notes: list[str] = field(default_factory=list)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for b in iter(lambda: fh.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def content_hash(path: Path, cache: Path | None = None, progress: Callable[[float, str], None] | None = None) -> str:
    """sha256 of a file, or of every file (path and bytes) under a folder. With `cache` (a SQLite file), a file whose
    size, modification time, inode and status-change time are as they were is not read again (as DVC's state database
    does, with the change time too): every status of a workspace read a folder of 20 000 images whole, a second each
    time, and a 2 GB zip likewise. The change time is what catches a file rewritten in place with its size and
    modification time put back (`touch -r`, `cp -p`, a tool that keeps mtimes): nothing can set it back."""
    path = Path(path)
    with _HashCache(cache) as known:
        if path.is_file():
            return known.sha256(str(path.absolute()))
        known.preload(str(path.absolute()) + os.sep)
        files = sorted(_files(str(path.absolute())))  # in the order sorted Paths had (a/b before a-c)
        known.forget_all_but({e.path for _, e in files})  # the folder's files that are gone
        checked = _FilesRead(path.name, len(files), progress, verb="checking")
        h = hashlib.sha256()
        for parts, entry in files:
            checked.tick()
            h.update("/".join(parts).encode())
            h.update(known.sha256(entry.path, entry.stat()).encode())
        return h.hexdigest()


def _files(root: str) -> Iterator[tuple[list[str], os.DirEntry]]:
    """(the relative path's parts, the entry) of every file under `root`, as Path.rglob finds them: folders that
    are symbolic links not followed, links to files taken, folders that cannot be listed passed over."""
    stack: list[tuple[list[str], str]] = [([], root)]
    while stack:
        parts, folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                stack.append(([*parts, e.name], e.path))
            elif e.is_file():
                yield [*parts, e.name], e


class _HashCache:
    """Files' sha256 by (absolute path, size, mtime in ns, inode, ctime in ns), kept in a SQLite file. Any trouble
    with the file (a read-only workspace, a lock held too long, a damaged file) only means the files are read: it never
    fails the hash. A cache written before the change time was kept gets its column, empty: each file is read once
    more."""

    _COLUMNS = "path, size, mtime_ns, inode, ctime_ns, sha256"

    def __init__(self, db: Path | None):
        self.db, self.con = db, None
        self.known: dict[str, tuple[int, int, int, int | None, str]] = {}
        self.new: list[tuple[str, int, int, int, int, str]] = []
        self.preloaded = False  # a folder's entries were read at once: a file not among them is new
        self.gone: list[str] = []

    def __enter__(self) -> _HashCache:
        if self.db is None:
            return self
        import sqlite3

        try:
            self.db.parent.mkdir(parents=True, exist_ok=True)
            self.con = sqlite3.connect(str(self.db), timeout=5)
            self.con.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, "
                             "mtime_ns INTEGER, inode INTEGER, sha256 TEXT, ctime_ns INTEGER)")
            if "ctime_ns" not in {r[1] for r in self.con.execute("PRAGMA table_info(hashes)")}:
                with self.con:
                    self.con.execute("ALTER TABLE hashes ADD COLUMN ctime_ns INTEGER")
        except (sqlite3.Error, OSError):
            self._close()
        return self

    def preload(self, prefix: str) -> None:
        """The entries of the files under a folder (its path and a separator), in one query."""
        self.preloaded = True
        self._load(f"SELECT {self._COLUMNS} FROM hashes WHERE path >= ? AND path < ?",
                   (prefix, prefix + "\U0010ffff"))

    def forget_all_but(self, kept: set[str]) -> None:
        """Drop the preloaded entries whose files are not in `kept` (deleted or moved since they were hashed)."""
        self.gone.extend(k for k in self.known if k not in kept)

    def _load(self, query: str, args: tuple[str, ...]) -> None:
        import sqlite3

        if self.con is None:
            return
        try:
            self.known.update((r[0], tuple(r[1:])) for r in self.con.execute(query, args))
        except sqlite3.Error:
            self._close()

    def sha256(self, key: str, st: os.stat_result | None = None) -> str:
        """The sha256 of the file at the absolute path `key` (`st`: its stat, where the caller has it)."""
        if self.con is None:
            return _sha256_file(Path(key))
        st = st or os.stat(key)
        stamp = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        if key not in self.known and not self.preloaded:  # a file of its own (a zip, a CSV): its one entry
            self._load(f"SELECT {self._COLUMNS} FROM hashes WHERE path = ?", (key,))
        seen = self.known.get(key)
        if seen is not None and seen[:4] == stamp:
            return seen[4]
        digest = _sha256_file(Path(key))
        # a file written in the last two seconds may change again within its mtime's tick: hashed, not kept
        if time.time_ns() - st.st_mtime_ns > 2_000_000_000:
            self.new.append((key, *stamp, digest))
        return digest

    def __exit__(self, *exc: object) -> None:
        import sqlite3

        if self.con is not None and (self.new or self.gone):
            try:
                with self.con:
                    self.con.executemany("DELETE FROM hashes WHERE path = ?", [(k,) for k in self.gone])
                    self.con.executemany(f"INSERT OR REPLACE INTO hashes ({self._COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                                         self.new)
            except sqlite3.Error:
                pass
        self._close()

    def _close(self) -> None:
        if self.con is not None:
            self.con.close()
        self.con = None


def detect_kind(path: Path) -> str:
    path = Path(path)
    if not path.exists():
        raise DataImportError(f"{path}: does not exist")
    name = path.name.lower()
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path).as_posix())]
        if not files:
            raise DataImportError(f"{path}: the folder is empty")
        if any("idx3-ubyte" in p.name for p in files):
            return "idx"
        if all(p.suffix.lower() == ".parquet" for p in files):  # a Hugging Face dataset's shards
            return "parquet"
        images = sum(p.suffix.lower() in IMAGE_EXTS for p in files)
        return "image-folder" if images > len(files) / 2 else "text-folder"
    if path.stat().st_size == 0:
        raise DataImportError(f"{path}: the file is empty")
    if "idx3-ubyte" in name:
        return "idx"
    if name.endswith(".zip"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/") and not _hidden(n)]
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataImportError(f"{path}: not a valid zip archive ({exc})") from None
        images = sum(PurePosixPath(n).suffix.lower() in IMAGE_EXTS for n in names)
        return "image-folder" if names and images > len(names) / 2 else "text-folder"
    if name.endswith((".csv", ".tsv")):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".json"):
        return "label-studio"
    raise DataImportError(
        f"{path}: unsupported source (expected a zip or folder of class subfolders, idx files, a .csv, "
        "a .jsonl, a .parquet file or folder of them, or a Label Studio .json export)"
    )


# what file managers leave in folders: Windows' thumbnail caches and folder settings, macOS's resource forks
_OS_FILES = {"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r"}


def _hidden(rel: str) -> bool:
    parts = rel.split("/")
    return any(p.startswith(".") or p == "__MACOSX" for p in parts) or parts[-1].lower() in _OS_FILES


# the options each kind of source reads (besides path and kind)
KIND_OPTIONS: dict[str, tuple[str, ...]] = {
    "text-folder": ("unlabeled",),
    "image-folder": ("unlabeled",),
    "idx": ("class_names",),
    "csv": ("text_column", "label_column", "unlabeled", "delimiter", "class_names", "encoding"),
    "jsonl": ("text_column", "label_column", "unlabeled", "class_names"),
    "parquet": ("text_column", "label_column", "unlabeled", "class_names"),
    "label-studio": ("media_root",),
}


def check_kind_options(path: Path, kind: str, opts: dict[str, Any]) -> None:
    """An option of another kind of source did nothing, without a word (class_names on a folder of texts)."""
    foreign = [k for k, v in opts.items() if k not in ("path", "kind") and k not in KIND_OPTIONS.get(kind, ())
               and v not in (None, False, "")]
    if foreign:
        fits = ", ".join(KIND_OPTIONS.get(kind, ())) or "none"
        raise DataImportError(f"{path}: the option {foreign[0]!r} is not for {'an' if kind[0] in 'aeiou' else 'a'} {kind} source (its options: {fits}); "
                              f"it is for {', '.join(k for k, o in KIND_OPTIONS.items() if foreign[0] in o)}")


def read_source(path: Path, kind: str | None = None, options: dict[str, Any] | None = None,
                labeling: dict[str, Any] | None = None,
                progress: Callable[[float, str], None] | None = None) -> SourceBatch:
    """`progress(fraction, message)`, where given, is called as a folder's or a zip's files, a CSV or JSON Lines
    file's lines, a Parquet file's rows, a Label Studio export's tasks or an idx folder's files are read (it may raise
    to stop the reading: data.import's cancel)."""
    path = Path(path)
    opts = dict(options or {})
    kind = kind or detect_kind(path)
    readers: dict[str, Callable[..., SourceBatch]] = {
        "text-folder": _read_class_folders,
        "image-folder": _read_class_folders,
        "idx": _read_idx,
        "csv": _read_csv,
        "jsonl": _read_jsonl,
        "parquet": _read_parquet,
        "label-studio": _read_label_studio,
    }
    if kind not in readers:
        raise DataImportError(f"{path}: unknown source kind {kind!r} (known: {', '.join(readers)})")
    if not path.exists():
        raise DataImportError(f"{path}: does not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise DataImportError(f"{path}: the file is empty")
    batch = readers[kind](path, kind, opts, labeling or {}, progress)
    if not batch.items:
        raise DataImportError(f"{path}: no items found")
    return batch


# -- class folders (zip or directory) -----------------------------------------------------------------------


PROGRESS_FILES = 200  # a source's files read between two looks at the clock
PROGRESS_SECONDS = 0.5  # and the least time between two progress events (each is the cancel's checkpoint too)


class _FilesRead:
    """Says how far the reading of a source's files (or a file's lines) is, every PROGRESS_FILES of them and at most
    every PROGRESS_SECONDS."""

    def __init__(self, name: str, total: int, progress: Callable[[float, str], None] | None, verb: str = "reading",
                 unit: str = "files"):
        self.name, self.total, self.progress, self.verb, self.unit = name, max(1, total), progress, verb, unit
        self.done, self.said, self.ticks = 0, time.monotonic(), 0

    def tick(self, done: int | None = None) -> None:
        """One more read, or (`done`) so many read so far (a CSV's line number: a record may span lines)."""
        self.ticks += 1
        self.done = self.done + 1 if done is None else done
        if (self.progress is not None and self.ticks % PROGRESS_FILES == 0
                and time.monotonic() - self.said >= PROGRESS_SECONDS):
            self.said = time.monotonic()
            self.progress(min(1.0, self.done / self.total),
                          f"{self.verb} {self.name}: {min(self.done, self.total)} of {self.total} {self.unit}")


def _read_class_folders(path: Path, kind: str, opts: dict[str, Any], _labeling: dict[str, Any],
                        progress: Callable[[float, str], None] | None = None) -> SourceBatch:
    item_kind = "image" if kind == "image-folder" else "text"
    entries: list[tuple[str, Callable[[], bytes]]] = []
    notes: list[str] = []
    if path.is_dir():
        files = sorted(_files(str(path)))  # the walk content_hash takes, in its order
        reading = _FilesRead(path.name, len(files), progress)

        def counted(p: str, tick: Callable[[], None] = reading.tick) -> bytes:
            tick()
            return Path(p).read_bytes()

        for parts, entry in files:
            entries.append(("/".join(parts), functools.partial(counted, entry.path)))
        digest = ""  # from the items read, below: content_hash(path) read every file once more
    else:
        digest = _sha256_file(path)
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataImportError(f"{path}: not a valid zip archive ({exc})") from None
        with zf:
            members = [info for info in zf.infolist() if not info.is_dir()]
            reading = _FilesRead(path.name, len(members), progress)
            for info in members:
                reading.tick()
                try:
                    data = zf.read(info)
                except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, zlib_error()) as exc:
                    raise DataImportError(f"{path}: corrupt zip archive: member {info.filename}: {exc}") from None
                entries.append((info.filename, lambda data=data: data))
    items: list[RawItem] = []
    loose: list[tuple[str, Callable[[], bytes]]] = []  # files outside any class folder
    unlabeled = bool(opts.get("unlabeled"))
    others: dict[str, list[str]] = {}  # in a folder of images, files of other kinds, by extension
    foldered: list[tuple[str, Callable[[], bytes]]] = []  # files in folders, their class found below
    hidden: list[str] = []  # .DS_Store, __MACOSX/, Thumbs.db: one note for them all (a line each was a screenful)
    for rel, read in entries:
        if _hidden(rel):
            hidden.append(rel)
            continue
        ext = PurePosixPath(rel).suffix.lower()
        if item_kind == "image" and ext not in IMAGE_EXTS:  # notes.txt, a PDF, Thumbs.db: imported as images,
            others.setdefault(ext or "(none)", []).append(rel)  # then quarantined as undecodable, one by one
            continue
        if unlabeled:  # every file, whatever folder it is in: the labelers give the classes
            items.append(RawItem(key=rel, payload=read(), label=None))
        elif "/" not in rel:
            loose.append((rel, read))
        else:
            foldered.append((rel, read))
    if hidden:
        notes.append(f"ignored {len(hidden)} hidden or system file(s): {', '.join(hidden[:3])}"
                     + (", …" if len(hidden) > 3 else ""))
    found, nested, beside = folder_classes([rel for rel, _ in foldered])
    for rel, read in foldered:
        if rel not in found:  # beside the class folders: ignored, as a file outside any folder is (below)
            continue
        label, split = found[rel]
        items.append(RawItem(key=rel, payload=read(), label=label, split=split))
    if nested:
        notes.append(f"{len(nested)} file(s) in folders below their class folder take its class: "
                     f"{', '.join(nested[:3])}{', …' if len(nested) > 3 else ''}")
    for ext, rels in sorted(others.items()):
        notes.append(f"ignored {len(rels)} file(s) that are no image ({ext}): {', '.join(rels[:3])}"
                     + (", …" if len(rels) > 3 else "") + f"; image files are {', '.join(sorted(IMAGE_EXTS))}")
    classes = {i.label for i in items}
    if len(classes) == 1 and not unlabeled:  # photos.zip of photos/*.png: a class, or files to label?
        notes.append(f"all {len(items)} file(s) are in folders named {next(iter(classes))!r}: imported as that one "
                     "class (`--unlabeled`, the data panel's unlabeled box, imports them to be labeled)")
    if loose and not items:  # a flat folder of photos or texts, to be labeled: each file an unlabeled item
        items = [RawItem(key=rel, payload=read(), label=None) for rel, read in loose]
        notes.append(f"no class folders: {len(items)} file(s) imported unlabeled, for the labeling queue")
    else:
        notes += [f"ignored {rel}: not inside a class folder (--unlabeled, the data panel's unlabeled box, takes "
                  "every file, unlabeled)"
                  for rel in [r for r, _ in loose] + beside]
    if not items:
        raise DataImportError(f"{path}: no files found (expected CLASS/FILE entries, or files to label)")
    if not digest:
        h = hashlib.sha256()
        for it in sorted(items, key=lambda i: i.key):
            h.update(it.key.encode())
            h.update(hashlib.sha256(it.payload or b"").hexdigest().encode())
        digest = h.hexdigest()
    return SourceBatch(path.name, kind, item_kind, digest, items, notes=notes)


def folder_classes(rels: list[str]) -> tuple[dict[str, tuple[str, str | None]], list[str], list[str]]:
    """The class (and train/test split, or None) of each file in a folder (paths with a '/'), as data.import reads
    them and `models predict --input FOLDER` gives them, and the files below their class folder. The class folders
    are at the depth most files are at (CLASS/FILE, a zipped folder's photos/CLASS/FILE, train/CLASS/FILE); a file
    in a folder below its class folder (cats/2024/x.jpg) takes its class folder's label, as Keras'
    image_dataset_from_directory gives it (cats/sub/x.jpg made a class "sub" of cats and dogs alike); a file less
    deep than most is in its own folder's class, but one beside the class folders (the BBC archive's
    bbc/README.TXT next to bbc/business/) is in none: it is in the third list, not in the first (it made a class
    "bbc" of one item)."""
    depths = Counter(rel.count("/") - 1 for rel in rels)
    level = max(depths, key=lambda d: (depths[d], -d)) if depths else 0
    found: dict[str, tuple[str, str | None]] = {}
    nested: list[str] = []
    holders = {"/".join(rel.split("/")[:level]) for rel in rels if rel.count("/") - 1 >= level}  # hold the classes
    beside = [rel for rel in rels if rel.count("/") - 1 < level and rel.rsplit("/", 1)[0] in holders]
    for rel in rels:
        if rel in beside:
            continue
        parts = rel.split("/")
        at = len(parts) - 2
        if at > level:
            nested.append(rel)
            at = level
        # train/CLASS/FILE and test/CLASS/FILE (Keras' layout, `cdl data export`'s folder) keep their split
        split = parts[at - 1].lower() if at >= 1 and parts[at - 1].lower() in ("train", "test") else None
        found[rel] = (parts[at], split)
    return found, nested, beside


def zlib_error() -> type[BaseException]:
    import zlib

    return zlib.error


# -- idx ----------------------------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_idx_file(path: Path) -> np.ndarray:
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (EOFError, OSError, zlib_error()) as exc:
        raise DataImportError(f"{path}: truncated or corrupt gzip data ({exc})") from None
    if len(raw) < 4:
        raise DataImportError(f"{path}: too short to be an idx file ({len(raw)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code not in _IDX_DTYPES or ndim == 0:
        raise DataImportError(f"{path}: not an idx file (bad magic number {raw[:4].hex()})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataImportError(f"{path}: truncated header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[dtype_code])
    expected = int(np.prod(dims)) * dtype.itemsize
    have = len(raw) - header
    if have < expected:
        raise DataImportError(
            f"{path}: truncated: the header announces {dims[0]} records of shape {tuple(dims[1:])} "
            f"({expected} bytes) but the file holds {have} bytes"
        )
    if have > expected:
        raise DataImportError(f"{path}: {have - expected} unexpected bytes after the data")
    return np.frombuffer(raw, dtype=dtype, count=int(np.prod(dims)), offset=header).reshape(dims)


def _idx_pairs(path: Path) -> list[tuple[Path, Path, str | None]]:
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if "images-idx3-ubyte" in p.name)
    else:
        images = [path]
    if not images:
        raise DataImportError(f"{path}: no *-images-idx3-ubyte files found")
    pairs = []
    for img in images:
        lbl = img.with_name(img.name.replace("images-idx3", "labels-idx1"))
        if not lbl.exists():
            raise DataImportError(f"{img}: its labels file {lbl.name} is missing")
        prefix = img.name.split("-")[0].lower()
        split = "train" if prefix.startswith("train") else "test" if prefix in ("t10k", "test") else None
        pairs.append((img, lbl, split))
    return pairs


def _class_names(opts: dict[str, Any]) -> list[str] | None:
    """The class_names option: a list, or a preset's name."""
    names = opts.get("class_names")
    if isinstance(names, str):
        if names not in CLASS_NAME_PRESETS:
            from runtime.domain.errors import did_you_mean

            raise DataImportError(
                f"class_names: unknown preset {names!r}{did_you_mean(names, tuple(CLASS_NAME_PRESETS))} (known: "
                f"{', '.join(CLASS_NAME_PRESETS)}), or give a list"
            )
        names = CLASS_NAME_PRESETS[names]
    return names


def _named(label: str | None, names: list[str] | None, where: str) -> str | None:
    """A label that is a class number (Hugging Face's ClassLabel, as `to_csv`/`to_json` write it) as its class
    name, where class_names gives them."""
    if label is None or names is None:
        return label
    if not label.isdigit() or int(label) >= len(names):
        raise DataImportError(f"{where}: label {label!r} is no class number 0-{len(names) - 1} of the "
                              f"{len(names)} class_names")
    return names[int(label)]


def _read_idx(path: Path, kind: str, opts: dict[str, Any], _labeling: dict[str, Any],
              progress: Callable[[float, str], None] | None = None) -> SourceBatch:
    names = _class_names(opts)
    arrays = []
    items: list[RawItem] = []
    h = hashlib.sha256()
    pairs = _idx_pairs(path)
    for n, (img_path, lbl_path, split) in enumerate(pairs):
        if progress is not None:  # a pair at a time: Fashion-MNIST's 60 000 images take about a second
            progress(n / len(pairs), f"reading {path.name}: {img_path.name} ({n + 1} of {len(pairs)} idx pairs)")
        images = _read_idx_file(img_path)
        labels = _read_idx_file(lbl_path)
        h.update(_sha256_file(img_path).encode())
        h.update(_sha256_file(lbl_path).encode())
        if images.ndim not in (3, 4) or images.dtype != np.uint8:
            raise DataImportError(f"{img_path}: expected uint8 images (N, H, W[, C]), got {images.dtype} {images.shape}")
        if labels.ndim != 1:
            raise DataImportError(f"{lbl_path}: expected one label per record, got shape {labels.shape}")
        if len(labels) != len(images):
            raise DataImportError(
                f"{lbl_path}: {len(labels)} labels for {len(images)} images in {img_path.name}"
            )
        if names is not None and labels.size and int(labels.max()) >= len(names):
            raise DataImportError(
                f"{lbl_path}: label {int(labels.max())} has no class name ({len(names)} names given)"
            )
        width = len(str(len(images) - 1))
        for i, lab in enumerate(labels.tolist()):
            label = names[lab] if names is not None else str(lab)
            items.append(RawItem(key=f"{img_path.name}#{i:0{width}d}", payload=None, label=label, split=split))
        arrays.append(images)
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise DataImportError(f"{path}: the idx files hold images of different shapes {sorted(shapes)}")
    array = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    name = path.name
    return SourceBatch(name, kind, "image", h.hexdigest(), items, array=array)


# -- csv ----------------------------------------------------------------------------------------------------


READS_AS_CP1252 = "it reads as cp1252"  # the studio's data panel offers to import so on this phrase


def _guess(raw: bytes) -> str:
    """The encoding option a file that is not UTF-8 most likely needs: Excel on Windows writes cp1252."""
    try:
        raw.decode("cp1252")
    except UnicodeDecodeError:
        return ": --encoding NAME (the source's `encoding` in cdl.yaml)"
    return (f": {READS_AS_CP1252} (Windows, Western European: what Excel saves as \"CSV\"), so --encoding cp1252 "
            "(the source's `encoding` in cdl.yaml) if its accents come out right")


def _delimiter(text: str) -> str:
    """The header line's separator: a comma, or, in a header without one, a semicolon (spreadsheets in locales
    that write decimal commas save CSV so), a tab or a bar. A semicolon file read as commas failed with "no text
    column (columns: text;label)"."""
    header = text.split("\n", 1)[0]
    if "," in header:
        return ","
    return next((d for d in (";", "\t", "|") if d in header), ",")


def _encoding(path: Path, opts: dict[str, Any]) -> str | None:
    """The `encoding` option (a CSV saved by Excel on Windows is cp1252), checked to be one Python knows."""
    name = opts.get("encoding")
    if not name:
        return None
    import codecs

    try:
        return codecs.lookup(str(name)).name
    except LookupError:
        raise DataImportError(f"{path}: unknown encoding {name!r} (for example utf-8, cp1252, latin-1, utf-16, "
                              "shift_jis)") from None


def _open_csv(path: Path, opts: dict[str, Any]) -> tuple[bytes, str | None, Any, list[str]]:
    """(raw bytes, the encoding named, a csv reader past the header, the header's columns): decoded as the
    import reads it (UTF-8, a byte order mark's UTF-16, or the `encoding` option)."""
    raw = path.read_bytes()
    encoding = _encoding(path, opts)
    try:
        if encoding:
            text = raw.decode("utf-8-sig" if encoding == "utf-8" else encoding)
        # a spreadsheet's "Unicode text" is UTF-16 with a byte order mark (tab-separated): the mark says so
        elif raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            text = raw.decode("utf-16")
        else:
            text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        if encoding:
            raise DataImportError(f"{path}: line {line}: not {encoding} text ({exc.reason} at byte {exc.start})") from None
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise DataImportError(f"{path}: UTF-16 text with a broken character at byte {exc.start}") from None
        raise DataImportError(f"{path}: line {line}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as "
                              f"UTF-8 (a spreadsheet's \"CSV UTF-8\"), or name its encoding{_guess(raw)}") from None
    delimiter = "\t" if path.suffix.lower() == ".tsv" else opts.get("delimiter") or _delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataImportError(f"{path}: the file is empty") from None
    except csv.Error as exc:
        raise DataImportError(f"{path}: line 1: {exc}") from None
    return raw, encoding, reader, [c.strip() for c in header]


def _read_csv(path: Path, kind: str, opts: dict[str, Any], _labeling: dict[str, Any],
              progress: Callable[[float, str], None] | None = None) -> SourceBatch:
    raw, encoding, reader, cols = _open_csv(path, opts)
    # lines, not records (a text may hold line breaks): a UTF-16 file's b"\n\x00" counts too
    reading = _FilesRead(path.name, raw.count(b"\n") + (not raw.endswith(b"\n")), progress, unit="lines")
    lower = [c.lower() for c in cols]
    shown = ", ".join(cols)
    shown = shown if len(shown) <= 200 else shown[:197] + "…"  # a header read in the wrong encoding is one long run
    read_as = (f"; read as {encoding}: is that the file's encoding?" if encoding else "")

    def pick(option: str, candidates: tuple[str, ...], what: str, required: bool) -> int | None:
        wanted = opts.get(option)
        if wanted:
            if wanted not in cols:
                raise DataImportError(f"{path}: no column {wanted!r} (columns: {shown}){read_as}")
            return cols.index(wanted)
        for c in candidates:
            if c in lower:
                return lower.index(c)
        if required:
            raise DataImportError(
                f"{path}: no {what} column (looked for {', '.join(candidates)}; columns: {shown}); "
                f"name it with --{option.replace('_', '-')}" + (UNLABELED_HINT if what == "label" else "") + read_as
            )
        return None

    text_col = pick("text_column", TEXT_COLUMNS, "text", True)
    # a file of texts alone (one column) has no labels to look for: its texts are for the labeling queue, as a
    # folder of files with no class folder is (it was refused, "no label column ... name it with --label-column")
    alone = len(cols) == 1 and not opts.get("label_column")
    label_col = pick("label_column", LABEL_COLUMNS, "label", not opts.get("unlabeled", False) and not alone)
    notes = [f"one column, {cols[0]!r}, and no label column: its texts are imported unlabeled, for the labeling "
             "queue"] if alone and not opts.get("unlabeled") else []
    names = _class_names(opts)
    items: list[RawItem] = []
    try:
        for row in reader:
            line = reader.line_num
            reading.tick(line)
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(cols):
                raise DataImportError(f"{path}: line {line}: {len(row)} fields, the header has {len(cols)}")
            label = row[label_col].strip() if label_col is not None else None
            items.append(RawItem(key=f"row{line}", payload=row[text_col].encode("utf-8"),
                                 label=_named(label or None, names, f"{path}: line {line}")))
    except csv.Error as exc:
        raise DataImportError(f"{path}: line {reader.line_num}: {exc}") from None
    return SourceBatch(path.name, kind, "text", hashlib.sha256(raw).hexdigest(), items, notes=notes)


def source_columns(path: Path, options: dict[str, Any] | None = None) -> list[str]:
    """The columns (a CSV's header, a JSON Lines file's first record's fields, a Parquet file's columns) of a
    source, for a user to name the text and label columns where the import found none by name; [] for other
    kinds. Raises DataImportError where the file cannot be read so far."""
    path = Path(path)
    opts = dict(options or {})
    kind = opts.get("kind") or detect_kind(path)
    if kind == "csv":
        return _open_csv(path, opts)[3]
    if kind == "jsonl":
        data = path.read_bytes()
        if path.name.lower().endswith(".gz"):
            data = gzip.decompress(data)
        for line in data.decode("utf-8-sig", errors="replace").splitlines():
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    return []
                return list(obj) if isinstance(obj, dict) else []
        return []
    if kind == "parquet":
        import duckdb

        files = _parquet_files(path)
        return list(duckdb.connect().read_parquet(str(files[0])).columns) if files else []
    return []


def _pick_field(where: str, obj: dict[str, Any], opts: dict[str, Any], option: str, candidates: tuple[str, ...],
                what: str, required: bool, noun: str = "field") -> str | None:
    keys = list(obj)
    wanted = opts.get(option)
    if wanted:
        if wanted not in obj:
            raise DataImportError(f"{where}: no {noun} {wanted!r} ({noun}s: {', '.join(keys)})")
        return wanted
    lower = {k.lower(): k for k in keys}
    for c in candidates:
        if c in lower:
            return lower[c]
    if required:
        raise DataImportError(f"{where}: no {what} {noun} (looked for {', '.join(candidates)}; {noun}s: "
                              f"{', '.join(keys)}); name it with --{option.replace('_', '-')}"
                              + (UNLABELED_HINT if what == "label" else ""))
    return None


def _read_jsonl(path: Path, kind: str, opts: dict[str, Any], _labeling: dict[str, Any],
                progress: Callable[[float, str], None] | None = None) -> SourceBatch:
    raw = path.read_bytes()
    data = raw
    if path.name.lower().endswith(".gz"):
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib_error()) as exc:
            raise DataImportError(f"{path}: not a valid gzip file ({exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataImportError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    unlabeled = bool(opts.get("unlabeled", False))
    names = _class_names(opts)
    text_key = label_key = None
    items: list[RawItem] = []
    lines = text.splitlines()
    reading = _FilesRead(path.name, len(lines), progress, unit="lines")
    for line_no, line in enumerate(lines, 1):
        reading.tick()
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataImportError(f"{path}: line {line_no}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise DataImportError(f"{path}: line {line_no}: expected a JSON object, got {type(obj).__name__}")
        if text_key is None:  # the first record names the fields, as a CSV's header does
            where = f"{path}: line {line_no}"
            text_key = _pick_field(where, obj, opts, "text_column", TEXT_COLUMNS, "text", True)
            label_key = _pick_field(where, obj, opts, "label_column", LABEL_COLUMNS, "label", not unlabeled)
        body = obj.get(text_key)
        if not isinstance(body, str):
            raise DataImportError(f"{path}: line {line_no}: {text_key!r} must be a string, got "
                                  f"{'nothing' if body is None else type(body).__name__}")
        label = None
        if label_key is not None:
            value = obj.get(label_key)
            if isinstance(value, bool) or not isinstance(value, str | int | type(None)):
                raise DataImportError(f"{path}: line {line_no}: {label_key!r} must be a string or a whole number, "
                                      f"got {type(value).__name__}")
            label = _named((str(value).strip() or None) if value is not None else None, names,
                           f"{path}: line {line_no}")
        split = obj.get("split")
        if split is not None and split not in ("train", "test"):
            hint = (" (model.train takes its validation split from train: give these rows split train, or leave "
                    "split out)") if str(split).lower() in ("validation", "valid", "val", "dev") else ""
            raise DataImportError(f"{path}: line {line_no}: split must be train or test, got {split!r}{hint}")
        items.append(RawItem(key=f"line{line_no}", payload=body.encode("utf-8"), label=label, split=split))
    return SourceBatch(path.name, kind, "text", hashlib.sha256(raw).hexdigest(), items)


# -- parquet ------------------------------------------------------------------------------------------------

IMAGE_COLUMNS = ("image", "img", "picture", "photo")


def _parquet_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*.parquet") if not _hidden(p.relative_to(path).as_posix()))


def _shard_split(p: Path) -> str | None:
    """A Hugging Face shard's split from its name (train-00000-of-00003.parquet, test.parquet)."""
    stem = p.name.lower().split(".")[0].split("-")[0]
    return stem if stem in ("train", "test") else None


def _parquet_label(value: Any, at: str, col: str) -> str | None:  # noqa: ANN401
    """A label cell as a label: text, or a class number. pandas writes class numbers with one missing as floats
    (2.0, and NaN for the missing one): a whole float is its number, NaN no label."""
    if isinstance(value, float | Decimal):
        if value != value:  # NaN
            return None
        if not math.isfinite(value) or value != int(value):
            raise DataImportError(f"{at}: {col!r} must be a string or a whole number, got {value!r}")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, str | int | type(None)):
        raise DataImportError(f"{at}: {col!r} must be a string or a whole number, got {type(value).__name__}")
    return (str(value).strip() or None) if value is not None else None


def _read_parquet(path: Path, kind: str, opts: dict[str, Any], _labeling: dict[str, Any],
                  progress: Callable[[float, str], None] | None = None) -> SourceBatch:
    """A Parquet file, or a folder of them (a Hugging Face dataset's shards: train-*.parquet keep split train,
    test-*.parquet test), read with DuckDB: a text column, or an image column (Hugging Face's {bytes, path}
    struct, or the file's bytes), and an optional label column (class numbers named by class_names)."""
    import duckdb

    files = _parquet_files(path)
    if not files:
        raise DataImportError(f"{path}: no .parquet files in the folder")
    names = _class_names(opts)
    unlabeled = bool(opts.get("unlabeled", False))
    items: list[RawItem] = []
    notes: list[str] = []
    item_kind = None
    h = hashlib.sha256()
    con = duckdb.connect()
    try:
        for n, f in enumerate(files):
            where = str(f)
            if progress is not None:
                shard = f" ({n + 1} of {len(files)} files)" if path.is_dir() else ""
                progress(n / len(files), f"reading {path.name}{shard}")
            h.update(f.name.encode())
            h.update(_sha256_file(f).encode())
            try:
                rel = con.read_parquet(str(f))
                cols = dict(zip(rel.columns, (str(t) for t in rel.types), strict=True))
            except duckdb.Error as exc:
                raise DataImportError(f"{where}: not a Parquet file DuckDB can read ({str(exc).splitlines()[0]})") \
                    from None
            text_col = _pick_field(where, cols, opts, "text_column", TEXT_COLUMNS, "text", False, "column")
            image_col = None if text_col else _pick_field(where, cols, opts, "image_column", IMAGE_COLUMNS, "image",
                                                          False, "column")
            if text_col is None and image_col is None:
                raise DataImportError(f"{where}: no text column (looked for {', '.join(TEXT_COLUMNS)}) and no image "
                                      f"column (looked for {', '.join(IMAGE_COLUMNS)}; columns: {', '.join(cols)}); "
                                      "name the text column with --text-column")
            this_kind = "text" if text_col else "image"
            if item_kind not in (None, this_kind):
                raise DataImportError(f"{where}: {this_kind}s, where the files before it held {item_kind}s")
            item_kind = this_kind
            label_col = _pick_field(where, cols, opts, "label_column", LABEL_COLUMNS, "label", not unlabeled, "column")
            col = text_col or image_col
            if this_kind == "image" and cols[col].startswith("STRUCT") and "bytes" in cols[col]:
                value = f'"{col}".bytes'  # Hugging Face's Image feature: {bytes, path}
            elif this_kind == "image" and cols[col] != "BLOB":
                raise DataImportError(f"{where}: column {col!r} is {cols[col]}: images are the files' bytes (BLOB) "
                                      "or Hugging Face's {bytes, path}")
            else:
                value = f'"{col}"'
            label_sql = f', "{label_col}"' if label_col else ", NULL"
            split_col = next((c for c in cols if c.lower() == "split"), None)  # as JSON Lines' split field
            split_sql = f', "{split_col}"' if split_col else ""
            rows = con.execute(f'SELECT {value}{label_sql}{split_sql} FROM read_parquet(?)', [str(f)]).fetchall()
            split = _shard_split(f) if path.is_dir() else None
            if path.is_dir() and split is None and not split_col:
                notes.append(f"{f.name}: its rows are split by data.split (a file name starting with train or test "
                             "keeps that split)")
            # this file's share of the bar, by its rows
            reading = _FilesRead(f.name, len(rows), progress and (
                lambda fr, msg, n=n: progress((n + fr) / len(files), msg)), unit="rows")
            for i, row in enumerate(rows):
                reading.tick()
                at = f"{where}: row {i + 1}"
                row_split = split
                if split_col and row[2] is not None:
                    if row[2] not in ("train", "test"):
                        raise DataImportError(f"{at}: split must be train or test, got {row[2]!r}")
                    row_split = row[2]
                body = row[0]
                if body is None:
                    raise DataImportError(f"{at}: {col!r} is empty")
                if this_kind == "text" and not isinstance(body, str):
                    raise DataImportError(f"{at}: {col!r} is {type(body).__name__}, not text")
                label = _named(_parquet_label(row[1], at, label_col) if label_col else None, names, at)
                payload = body.encode("utf-8") if this_kind == "text" else bytes(body)
                key = (f"{f.relative_to(path).as_posix()}#" if path.is_dir() else "row") + str(i + 1)
                items.append(RawItem(key=key, payload=payload, label=label, split=row_split))
    finally:
        con.close()
    return SourceBatch(path.name, kind, item_kind or "text", h.hexdigest(), items, notes=notes)


# -- Label Studio -------------------------------------------------------------------------------------------


def load_label_studio(path: Path) -> list[dict[str, Any]]:
    from runtime.domain.frozen import no_collection

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
        with no_collection():  # a million objects, none in a cycle: an export of 70 000 images parsed in 2.4 s, 1.1 s so
            doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataImportError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise DataImportError(f"{path}: not UTF-8 ({exc.reason})") from None
    if isinstance(doc, dict) and "id" in doc and "data" in doc:
        doc = [doc]
    if not isinstance(doc, list):
        raise DataImportError(f"{path}: expected a list of Label Studio tasks, got {type(doc).__name__}")
    for i, task in enumerate(doc):
        if not isinstance(task, dict):
            raise DataImportError(f"{path}: task #{i}: expected an object, got {type(task).__name__}")
    return doc


def check_choice_names(tasks: list[Any], from_name: str, path: Path) -> None:
    """Refuse an export whose annotations choose under other control names only: a Label Studio project whose
    Choices is named "topic" gave "0 label(s) from 9 task(s); 9 unannotated" into a workspace whose labeling
    from_name is "category", as if nobody had labeled anything."""
    if not from_name:
        return
    others: Counter = Counter()
    for task in tasks:
        for ann in (task.get("annotations") or []) if isinstance(task, dict) else []:
            for res in (ann.get("result") or []) if isinstance(ann, dict) else []:
                if not isinstance(res, dict) or res.get("type") != "choices":
                    continue
                if res.get("from_name") == from_name:
                    return
                others[str(res.get("from_name"))] += 1
    if others:
        name, n = others.most_common(1)[0]
        where = f"its {n} choice(s) are all under the control {name!r}" if len(others) == 1 else \
            f"its choices are under the controls {', '.join(repr(k) for k in others)}"
        raise DataImportError(
            f"{path}: {where}, none under {from_name!r} (cdl.yaml's labeling.from_name); nothing was imported. Set "
            f"`labeling: {{from_name: {name}}}` in cdl.yaml if that control holds the class, then import again")


def ls_task_annotations(task: dict[str, Any], from_name: str, where: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """((label, labeler, source) per completed annotation, labelers who skipped) of one task, JSON or
    JSON_MIN. source is "import", or "manual" for annotations CDL Studio exported from manual labels (so a
    round trip keeps a labeler's decision above imported labels) and for those marked ground truth. An annotation CDL Studio exported (its meta
    has cdl_source) keeps its labeler's name: it is one of ours ("import:news.zip", "ls:3", "vera"); prefixed
    again ("ls:import:news.zip") it made a second labeler agreeing with the first on every item."""
    labels: list[tuple[str, str, str]] = []
    skips: list[str] = []
    if "annotations" in task:
        anns = task.get("annotations") or []
        if not isinstance(anns, list):
            raise DataImportError(f"{where}: 'annotations' must be a list")
        for ann in anns:
            who = ann.get("completed_by", "unknown")
            if isinstance(who, dict):
                who = who.get("email") or who.get("id")
            meta = ann.get("meta") if isinstance(ann.get("meta"), dict) else {}
            # an annotation marked ground truth in Label Studio (its star) is a decision, as a manual label is:
            # the way a reviewer settles annotations that disagree there; as "import" it was one more opinion, and
            # a conflict exported to Label Studio could not be resolved there
            source = "manual" if meta.get("cdl_source") == "manual" or ann.get("ground_truth") is True else "import"
            labeler = str(who) if "cdl_source" in meta else f"ls:{who}"
            if ann.get("was_cancelled"):
                skips.append(labeler)
                continue
            choices = []
            for res in ann.get("result") or []:
                if res.get("type") == "choices" and (res.get("from_name") == from_name or not from_name):
                    choices.extend((res.get("value") or {}).get("choices") or [])
            if len(choices) > 1:
                raise DataImportError(f"{where}: annotation {ann.get('id')} has several choices {choices}; "
                                      "only single-choice classification is supported")
            if choices:
                labels.append((str(choices[0]), labeler, source))
        return labels, skips
    # JSON_MIN: the choice is a top-level field named like the control tag
    value = task.get(from_name)
    if isinstance(value, dict) and "choices" in value:
        value = value["choices"]
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else None
    if value:
        labels.append((str(value), f"ls:{task.get('annotator', 'unknown')}", "import"))
    return labels, skips


def ls_file_ref(value: str) -> str:
    """The path in a Label Studio task's file reference: local storage's "/data/local-files/?d=photos/cats/1.png"
    gives "photos/cats/1.png"; an upload's "/data/upload/2/3b1a989e-x.png", or a URL, stays as it is."""
    from urllib.parse import unquote

    return unquote(value.split("?d=", 1)[1] if "?d=" in value else value.split("?", 1)[0])


def ls_file_names(value: str, file_upload: str | None = None) -> list[str]:
    """The file names a Label Studio task's file may have had before Label Studio took it: the reference's last
    part, and without the 8 hex digits and dash Label Studio prefixes an upload with ("3b1a989e-x.png" was
    "x.png"); the task's `file_upload` names the same."""
    names: list[str] = []
    for base in (os.path.basename(ls_file_ref(value)), file_upload or ""):
        m = re.match(r"^[0-9a-f]{8}-(.+)$", base)
        for name in (base, m.group(1) if m else ""):
            if name and name not in names:
                names.append(name)
    return names


NO_MEDIA_HINT = " (pass --media-root with the folder of the images)"  # the data panel asks for the folder on it


def ls_media_file(value: str, media_root: Path) -> Path | None:
    """The file a Label Studio task refers to, under media_root (the folder of the project's files, or Label
    Studio's own media folder, which holds "/data/upload/2/x.png" as upload/2/x.png): by its path, its name, or
    its name without Label Studio's upload prefix; None where there is none."""
    ref = ls_file_ref(value)
    inside = [ref.lstrip("/")] + ([ref[len("/data/"):]] if ref.startswith("/data/") else [])
    for c in [media_root / p for p in inside] + [media_root / name for name in ls_file_names(value)]:
        if c.is_file():
            return c
    return None


def _ls_payload(task: dict[str, Any], to_name: str, media_root: Path, where: str) -> tuple[bytes, str]:
    data = task.get("data", task)
    if not isinstance(data, dict):
        raise DataImportError(f"{where}: 'data' must be an object")
    if "text" in data or to_name == "text":
        value = data.get(to_name, data.get("text"))
        if not isinstance(value, str):
            other = [k for k in ("image", "img", "url") if isinstance(data.get(k), str)]
            if other:  # an image export, into a workspace whose label config takes text
                raise DataImportError(f"{where}: holds an image (data.{other[0]}), but this workspace is for text "
                                      f"(its label config takes data.{to_name}); nothing was imported. Make an image "
                                      "workspace: `cdl init PATH --template image-classification`")
            raise DataImportError(f"{where}: no text in data.{to_name} (keys: {', '.join(data) or 'none'})")
        return value.encode("utf-8"), "text"
    value = data.get(to_name, data.get("image"))
    if not isinstance(value, str):
        raise DataImportError(f"{where}: no text or image in its data (keys: {', '.join(data)})")
    if value.startswith("data:"):
        return base64.b64decode(value.split(",", 1)[1]), "image"
    found = ls_media_file(value, media_root)
    if found is not None:
        return found.read_bytes(), "image"
    raise DataImportError(
        f"{where}: image {value!r} not found under {media_root}{NO_MEDIA_HINT}"
    )


def _read_label_studio(path: Path, kind: str, opts: dict[str, Any], labeling: dict[str, Any],
                       progress: Callable[[float, str], None] | None = None) -> SourceBatch:
    if progress is not None:  # the parse is one call: an export of 70 000 images (118 MB) takes a second or two
        progress(0.0, f"reading {path.name} ({path.stat().st_size / 1e6:.0f} MB)")
    tasks = load_label_studio(path)
    media_root = Path(opts.get("media_root") or path.parent)
    items: list[RawItem] = []
    kinds = set()
    reading = _FilesRead(path.name, len(tasks), progress, unit="tasks")
    for i, task in enumerate(tasks):
        reading.tick()
        tid = task.get("id", i + 1)
        where = f"{path}: task {tid}"
        data = task.get("data", task)
        is_text = isinstance(data, dict) and "text" in data
        to_name = labeling.get("to_name") or ("text" if is_text else "image")
        from_name = labeling.get("from_name") or ("category" if is_text else "label")
        payload, item_kind = _ls_payload(task, to_name, media_root, where)
        kinds.add(item_kind)
        labels, skips = ls_task_annotations(task, from_name, where)
        distinct = {lab for lab, _, _ in labels}
        decided = [lab for lab, _, source in labels if source == "manual"]  # a ground truth settles a disagreement
        label = decided[-1] if decided else next(iter(distinct)) if len(distinct) == 1 else None
        items.append(RawItem(key=f"task{tid}", payload=payload, label=label, labels=labels, skips=skips))
    if len(kinds) > 1:
        raise DataImportError(f"{path}: mixes text and image tasks")
    if kinds:  # after the tasks' own checks (an image export into a text workspace says that first)
        check_choice_names(tasks, labeling.get("from_name") or ("category" if "text" in kinds else "label"), path)
    digest = _sha256_file(path)
    return SourceBatch(path.name, kind, kinds.pop(), digest, items)
