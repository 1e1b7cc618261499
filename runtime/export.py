"""`cdl data export`: a dataset version's items and labels out of the workspace, in the formats `cdl data import`
reads (so an export imports back as the same items): a CSV, TSV or JSON Lines file of texts, a Parquet file of
texts or images (images as Hugging Face's Image feature, {bytes, path}), or a folder of SPLIT/CLASS/FILE. Whole or
not at all: written beside the destination, then renamed into place."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from runtime.domain.errors import CdlError
from runtime.workspace.workspace import Workspace

FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


def export_version(ws: Workspace, dest: Path, version: str | None = None, split: str = "all",
                   quarantined: bool = False, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write `version` (default: the checked-out one) to `dest`. Quarantined items are left out unless
    `quarantined`. Returns {"version", "path", "format", "items", "labeled", "splits", "left_out_quarantined",
    "renamed_classes": {class: its folder's name} (a folder: "T-shirt/top" cannot be one, "T-shirt_top" is)}."""
    from runtime.datasets import version_view

    version = version or ws.current_version()
    if version is None:
        raise CdlError("no dataset version yet: run the data pipeline (`cdl run --until data.version`) first")
    v = ws.store.version(version)
    dest = Path(dest)
    fmt = FILE_FORMATS.get(dest.suffix.lower(), "folder")
    if dest.exists() and not (fmt == "folder" and dest.is_dir() and not any(dest.iterdir())):
        raise CdlError(f"{dest}: already exists; give a new {'folder' if fmt == 'folder' else 'file'}")
    if split not in ("all", "train", "test"):
        raise CdlError(f"--split {split!r}: train, test or all")
    view = version_view(ws, v.id)
    held = {q.item for q in ws.store.quarantine(v.id)}
    rows = [r for r in view.rows if (split == "all" or r.split == split) and (quarantined or r.uid not in held)]
    left_out = sum(1 for r in view.rows if r.uid in held and (split == "all" or r.split == split)) \
        if not quarantined else 0
    if not rows:
        raise CdlError(f"{v.id} has no items to export" + (f" in its {split} split" if split != "all" else ""))
    kinds = {r.kind for r in rows}
    if "image" in kinds and fmt in ("csv", "tsv", "jsonl"):
        raise CdlError(f"{dest.name}: images go to a .parquet file or a folder, not a {fmt} file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        out = tmp / "out"
        writer = {"csv": _write_table, "tsv": _write_table, "jsonl": _write_jsonl, "parquet": _write_parquet,
                  "folder": _write_folder}[fmt]
        renamed = writer(view, rows, out, fmt, progress or (lambda done, total: None)) or {}
        if fmt == "folder" and dest.is_dir():
            dest.rmdir()  # an empty folder that was given: its place is taken
        os.replace(out, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    splits: dict[str, int] = {}
    for r in rows:
        splits[r.split or "none"] = splits.get(r.split or "none", 0) + 1
    return {"version": v.id, "path": str(dest), "format": fmt, "items": len(rows),
            "labeled": sum(r.label is not None for r in rows), "splits": dict(sorted(splits.items())),
            "left_out_quarantined": left_out, "renamed_classes": renamed}


def _text(view: Any, row: Any) -> str:  # noqa: ANN401
    from runtime.workspace.dataset import decode_text

    return decode_text(view.read_bytes(row), "replace")[0]


def _file(view: Any, row: Any) -> tuple[bytes, str]:  # noqa: ANN401
    """An image item as a file and its extension: the imported file's own bytes, or a PNG of an idx row."""
    if row.encoding == "file":
        ext = PurePosixPath(row.uid.split(":", 1)[-1]).suffix.lower() or ".png"
        return view.read_bytes(row), ext
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(view.read_image(row)).save(buf, format="PNG")
    return buf.getvalue(), ".png"


def _write_table(view: Any, rows: list[Any], out: Path, fmt: str, progress: Callable) -> None:  # noqa: ANN401
    with open(out, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter="\t" if fmt == "tsv" else ",")
        w.writerow(["id", "text", "label", "split", "source"])
        for n, r in enumerate(rows, 1):
            w.writerow([r.id, _text(view, r), r.label or "", r.split or "", r.source])
            if n % 2000 == 0 or n == len(rows):
                progress(n, len(rows))


def _write_jsonl(view: Any, rows: list[Any], out: Path, fmt: str, progress: Callable) -> None:  # noqa: ANN401
    with open(out, "w", encoding="utf-8") as fh:
        for n, r in enumerate(rows, 1):
            fh.write(json.dumps({"id": r.id, "text": _text(view, r), "label": r.label, "split": r.split,
                                 "source": r.source}, ensure_ascii=False) + "\n")
            if n % 2000 == 0 or n == len(rows):
                progress(n, len(rows))


def _write_parquet(view: Any, rows: list[Any], out: Path, fmt: str, progress: Callable) -> None:  # noqa: ANN401
    import duckdb

    image = rows[0].kind == "image"
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE t (id VARCHAR, " + ("image STRUCT(bytes BLOB, path VARCHAR)" if image else
                                                       "text VARCHAR") + ", label VARCHAR, split VARCHAR, source VARCHAR)")
        batch: list[tuple] = []
        for n, r in enumerate(rows, 1):
            if image:
                data, ext = _file(view, r)
                value: Any = {"bytes": data, "path": f"{r.id[:16]}{ext}"}
            else:
                value = _text(view, r)
            batch.append((r.id, value, r.label, r.split, r.source))
            if len(batch) == 2000 or n == len(rows):
                con.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", batch)
                batch = []
                progress(n, len(rows))
        con.execute("COPY t TO ? (FORMAT parquet)", [str(out)])
    finally:
        con.close()


def _write_folder(view: Any, rows: list[Any], out: Path, fmt: str,  # noqa: ANN401
                  progress: Callable) -> dict[str, str]:
    """SPLIT/CLASS/FILE, as Keras' image_dataset_from_directory reads a split (unlabeled/FILE for items without a
    label: `cdl data import --unlabeled` takes that folder back), each file under its imported name where it had
    one, the content id's start added where two would share a name."""
    taken: set[Path] = set()
    renamed: dict[str, str] = {}
    for n, r in enumerate(rows, 1):
        if r.kind == "image":
            data, ext = _file(view, r)
        else:
            data, ext = _text(view, r).encode("utf-8"), ".txt"
        key = r.uid.split(":", 1)[-1]
        stem = PurePosixPath(key.replace("#", "/")).stem if r.encoding != "npy" else ""
        name = f"{_safe(stem) if stem else r.id[:16]}{ext}"  # _safe("") is "_": every idx row was "_-<id>.png"
        folder = out / (r.split or "none") / _safe(r.label) if r.label is not None else out / "unlabeled"
        if r.label is not None and _safe(r.label) != r.label:
            renamed[r.label] = _safe(r.label)
        path = folder / name
        if path in taken:
            path = folder / f"{Path(name).stem}-{r.id[:12]}{ext}"
        taken.add(path)
        folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if n % 2000 == 0 or n == len(rows):
            progress(n, len(rows))
    return renamed


def _safe(name: str) -> str:
    """A class or file name as a path part: no separators, no leading dot."""
    out = "".join(c if c not in '/\\:*?"<>|\0' else "_" for c in name).strip()
    return out.lstrip(".") or "_"
