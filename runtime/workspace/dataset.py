"""How items are stored on disk, so that importing 70 000 images is fast and a labeler can still open one.

Payloads live in immutable *packs*, named by the sha256 of their bytes:
- `<sha>.bin`: item bytes concatenated (text files, image files); an item is (offset, length) in it;
- `<sha>.npy`: a uint8 array of decoded images (N, H, W[, C]); an item is a row, read through a memory map.

An import writes its packs to `.cdl/packs/`. The ingest step lays the current items out as a dataset under
`data/dataset/`:

    data/dataset/index.jsonl    one JSON object per item, sorted by uid:
                                {uid, id, kind, source, label, conflict, split, pack, offset, length, encoding}
    data/dataset/packs/...      the packs those rows point into

`data/dataset` is one DVC-tracked directory; its DVC hash identifies a dataset version.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.proto.files import as_if_opened
from edge_agent.proto.images import decode_image, fit_image, image_channels, to_uint8  # noqa: F401 (also for studio)
from runtime.domain.errors import WorkspaceError
from runtime.domain.frozen import frozen_from_dicts, no_collection

INDEX_NAME = "index.jsonl"
UNLABELED = "(unlabeled)"


def write_bin_pack(directory: Path, payloads: Sequence[bytes]) -> tuple[str, list[tuple[int, int]]]:
    """Write payloads into one .bin pack; returns (pack file name, [(offset, length)])."""
    h = hashlib.sha256()
    spans = []
    offset = 0
    for p in payloads:
        h.update(p)
        spans.append((offset, len(p)))
        offset += len(p)
    name = f"{h.hexdigest()}.bin"
    dest = Path(directory) / name
    if not dest.exists():
        _atomic_write(dest, lambda fh: [fh.write(p) for p in payloads])
    return name, spans


def write_npy_pack(directory: Path, array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    h = hashlib.sha256(array.tobytes())
    h.update(repr((array.shape, str(array.dtype))).encode())
    name = f"{h.hexdigest()}.npy"
    dest = Path(directory) / name
    if not dest.exists():
        _atomic_write(dest, lambda fh: np.save(fh, array, allow_pickle=False))
    return name


def _atomic_write(dest: Path, writer) -> None:  # noqa: ANN001
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
    as_if_opened(fd)
    try:
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class PackReader:
    """Reads item payloads from packs in one folder (or, for a version read from DVC's cache, from the files
    `files` names); npy packs are memory-mapped and cached."""

    def __init__(self, directory: Path, files: dict[str, Path] | None = None):
        self.directory = Path(directory)
        self.files = files
        self._arrays: dict[str, np.ndarray] = {}

    def _path(self, pack: str) -> Path:
        if self.files is not None:
            path = self.files.get(pack)
            if path is None:
                raise WorkspaceError(f"pack {pack} is not part of this dataset version")
            return path
        return self.directory / pack

    def _array(self, pack: str) -> np.ndarray:
        arr = self._arrays.get(pack)
        if arr is None:
            path = self._path(pack)
            if not path.exists():
                raise WorkspaceError(f"pack {path} is missing (re-run data.ingest, or check out the version)")
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            self._arrays[pack] = arr
        return arr

    def read_bytes(self, pack: str, offset: int, length: int) -> bytes:
        path = self._path(pack)
        if pack.endswith(".npy"):
            return np.asarray(self._array(pack)[offset]).tobytes()
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read(length)
        except FileNotFoundError:
            raise WorkspaceError(f"pack {path} is missing (re-run data.ingest, or check out the version)") from None
        if len(data) != length:
            raise WorkspaceError(f"pack {path} is truncated at offset {offset}")
        return data

    def read_image(self, pack: str, offset: int, length: int, encoding: str) -> np.ndarray:
        """An image as a uint8 array (H, W) or (H, W, C). Raises ValueError if it cannot be decoded."""
        if encoding == "npy":
            return np.asarray(self._array(pack)[offset])
        return decode_image(self.read_bytes(pack, offset, length))

    def read_array_rows(self, pack: str, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._array(pack)[rows])


@dataclass(frozen=True)
class IndexRow:
    uid: str
    id: str
    kind: str
    source: str
    label: str | None
    conflict: bool
    split: str | None
    pack: str
    offset: int
    length: int
    encoding: str

    def to_json(self) -> str:
        return json.dumps(self.__dict__, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> IndexRow:
        d = json.loads(line)
        return cls(**d)


def read_index(path: Path) -> list[IndexRow]:
    if not Path(path).exists():
        raise WorkspaceError(f"{path}: no dataset here yet (run data.ingest)")
    data = Path(path).read_bytes()
    rows = _parse_index(data)
    if rows is not None:
        return rows
    for n, raw in enumerate(data.split(b"\n"), 1):  # something is wrong with it: find the line, to name it
        if not raw.strip():
            continue
        try:
            IndexRow.from_json(raw.decode("utf-8"))
        except (ValueError, TypeError) as exc:  # a traceback before: the file is written whole, so it was edited
            raise WorkspaceError(f"{path}: line {n}: not an index row ({str(exc).splitlines()[0][:120]}); the "
                                 "file is written by data.ingest and by checkouts, never by hand: `cdl data "
                                 "checkout VERSION` restores a version, `cdl run --until data.ingest --force` "
                                 "writes it anew") from None
    raise WorkspaceError(f"{path}: not a dataset index (one JSON object per line); `cdl data checkout VERSION` "
                         "restores a version")


_INDEX_FIELDS = frozenset(IndexRow.__dataclass_fields__)


def _parse_index(data: bytes) -> list[IndexRow] | None:
    """The rows of an index file read whole, or None where a line is not a row. One json.loads of every line at
    once, each row's dict made its __dict__ (runtime.domain.frozen): reading Fashion-MNIST's 70 000 rows a line at a
    time took 1.2 s, which every `cdl labels next` and `cdl status` paid; this takes about 0.65 s."""
    with no_collection():
        try:
            lines = [line for line in data.decode("utf-8").split("\n") if line.strip()]
            parsed = json.loads("[" + ",".join(lines) + "]")
        except ValueError:
            return None
    # as many rows as lines (not two objects on one line), each with the row's fields and no other
    if len(parsed) != len(lines) or not all(type(d) is dict and d.keys() == _INDEX_FIELDS for d in parsed):
        return None
    return frozen_from_dicts(IndexRow, parsed)


def write_index(path: Path, rows: Iterable[IndexRow]) -> None:
    data = "".join(r.to_json() + "\n" for r in sorted(rows, key=lambda r: r.uid)).encode("utf-8")
    _atomic_write(Path(path), lambda fh: fh.write(data))


def class_counts(rows: Iterable[IndexRow]) -> tuple[dict[str, int], dict[str, int], dict[str, dict[str, int]]]:
    """(items per class, items per split, items per class within each split). Unlabeled rows count under
    "(unlabeled)" so that totals always add up."""
    classes: Counter[str] = Counter()
    splits: Counter[str] = Counter()
    per: dict[str, Counter[str]] = {}
    for r in rows:
        c = r.label if r.label is not None else UNLABELED
        s = r.split or "unassigned"
        classes[c] += 1
        splits[s] += 1
        per.setdefault(s, Counter())[c] += 1
    return (
        dict(sorted(classes.items())),
        dict(sorted(splits.items())),
        {s: dict(sorted(c.items())) for s, c in sorted(per.items())},
    )


class DatasetView:
    """A dataset laid out as index + packs: the checked-out one under data/dataset, or one read from DVC's
    cache for an older version."""

    def __init__(self, rows: list[IndexRow], packs: PackReader | dict[str, Path]):
        self.rows = rows
        self._packs = packs
        self._by_uid: dict[str, IndexRow] | None = None
        self._labels: frozenset[str] | None = None
        self.index_stamp: tuple[int, int, int] | None = None  # data/dataset's index file as read (labeling sets it)
        self.index_path: Path | None = None  # and where it was read from

    @classmethod
    def open(cls, directory: Path) -> DatasetView:
        return cls(read_index(Path(directory) / INDEX_NAME), PackReader(Path(directory) / "packs"))

    def labels(self) -> frozenset[str]:
        """The labels the rows carry (found once: the labeling panel asked for them on every item, 0.05 s each at
        70 000 rows)."""
        if self._labels is None:
            self._labels = frozenset(r.label for r in self.rows if r.label)
        return self._labels

    def _uids(self) -> dict[str, IndexRow]:
        if self._by_uid is None:
            self._by_uid = {r.uid: r for r in self.rows}
        return self._by_uid

    def has(self, uid: str) -> bool:
        return uid in self._uids()

    def row(self, uid: str) -> IndexRow:
        try:
            return self._uids()[uid]
        except KeyError:
            raise WorkspaceError(f"item {uid!r} is not in this dataset version") from None

    def _reader(self) -> PackReader:
        if isinstance(self._packs, PackReader):
            return self._packs
        raise WorkspaceError("this dataset view has no packs")

    def read_bytes(self, row: IndexRow) -> bytes:
        return self._reader().read_bytes(row.pack, row.offset, row.length)

    def read_image(self, row: IndexRow) -> np.ndarray:
        return self._reader().read_image(row.pack, row.offset, row.length, row.encoding)

    def images(self, rows: Sequence[IndexRow], shape: tuple[int, int, int] | None = None) -> np.ndarray:
        """A batch of images as one array, reading npy packs in bulk. shape (height, width, channels): each image
        converted to that many channels (1 grayscale, 3 RGB) and resized where it differs, as the model's
        preprocessing fitted them (fit_image); without it, images of different shapes are refused by name."""
        if shape is not None:
            if not rows:
                return np.zeros((0, *shape), np.uint8)
            raw = self.raw_images(rows)
            if isinstance(raw, np.ndarray) and raw.dtype == np.uint8:  # npy packs: one shape, read in bulk
                bulk = raw[..., None] if raw.ndim == 3 else raw
                if bulk.shape[1:] == tuple(shape):
                    return bulk
            return np.stack([fit_image(a, shape) for a in raw])
        arrays = self.raw_images(rows)
        if isinstance(arrays, np.ndarray):
            return arrays
        shapes = Counter(a.shape for a in arrays)
        if len(shapes) > 1:
            common = shapes.most_common(1)[0][0]
            i = next(i for i, a in enumerate(arrays) if a.shape != common)
            raise ValueError(f"images of {len(shapes)} shapes: most are {list(common)}, {rows[i].source} is "
                             f"{list(arrays[i].shape)}")
        return np.stack(arrays)

    def raw_images(self, rows: Sequence[IndexRow]) -> np.ndarray | list[np.ndarray]:
        """npy rows as one array, read in bulk; others decoded one by one, as they are."""
        reader = self._reader()
        if rows and all(r.encoding == "npy" for r in rows):
            out = None
            by_pack: dict[str, list[int]] = {}
            for i, r in enumerate(rows):
                by_pack.setdefault(r.pack, []).append(i)
            for pack, idxs in by_pack.items():
                offs = np.array([rows[i].offset for i in idxs])
                order = np.argsort(offs)
                block = reader.read_array_rows(pack, offs[order])
                if out is None:
                    out = np.empty((len(rows), *block.shape[1:]), dtype=block.dtype)
                out[np.array(idxs)[order]] = block
            return out
        return [self.read_image(r) for r in rows] if rows else np.zeros((0,), np.uint8)


def decode_text(data: bytes, errors: str = "replace") -> tuple[str, list[str]]:
    """Decode UTF-8 (a BOM is dropped). Returns (text, actions taken) so that cleaning can be recorded."""
    actions: list[str] = []
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
        actions.append("removed UTF-8 byte order mark")
    elif data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 saved by an editor: its byte order mark says so
        try:
            data = data.decode("utf-16").encode("utf-8")
            actions.append("decoded UTF-16 (byte order mark)")
        except UnicodeDecodeError:
            pass  # not UTF-16 after all: decoded as UTF-8 below, and said so
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = []
        pos = 0
        while True:
            try:
                data[pos:].decode("utf-8")
                break
            except UnicodeDecodeError as e:
                start = pos + e.start
                bad.append(f"0x{data[start]:02x} at byte {start}")
                pos = pos + e.end
        if errors == "strict":
            raise ValueError(f"not valid UTF-8: {exc.reason} ({', '.join(bad[:3])})") from None
        text = data.decode("utf-8", errors=errors)
        actions.append(
            f"decoded with {errors}: {len(bad)} invalid byte{'s' if len(bad) != 1 else ''} ({', '.join(bad[:5])})"
        )
    if "\r\n" in text:
        text = text.replace("\r\n", "\n")
        actions.append("normalised CRLF line endings")
    return text, actions


def json_dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
