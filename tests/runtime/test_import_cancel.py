"""A source's files are read with progress, and an import can be stopped while they are: the studio's Cancel and
Ctrl-C leave nothing imported and cdl.yaml as it was (a folder of 100 000 photos chosen by mistake sat at "reading
photos" with no way to stop it but killing the studio)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from runtime.api import add_source
from runtime.domain.errors import DataImportError
from runtime.domain.events import EventKind
from runtime.steps import sources
from runtime.workspace import Workspace


def _texts(root: Path, n: int) -> Path:
    """A folder of class folders of n tiny texts."""
    for i in range(n):
        d = root / ("news" if i % 2 else "sport")
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i}.txt").write_text(f"item {i} of the folder")
    return root


def test_an_import_says_how_far_it_is_and_stops_when_cancelled(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "PROGRESS_FILES", 50)
    monkeypatch.setattr(sources, "PROGRESS_SECONDS", 0.0)
    ws = Workspace.init(tmp_path / "ws", "text-classification")
    folder = _texts(tmp_path / "texts", 400)
    yaml_before = (ws.root / "cdl.yaml").read_text()
    said: list[tuple[float, str]] = []
    cancel = threading.Event()

    def watch(ev) -> None:  # noqa: ANN001
        if ev.kind == EventKind.PROGRESS:
            said.append((ev.fraction, ev.message))
            if ev.message.startswith("reading texts: 100 of"):
                cancel.set()  # as the studio's Cancel does, from its thread

    with pytest.raises(DataImportError, match="texts: import cancelled; nothing was imported"):
        add_source(ws, folder, subscriber=watch, cancel=cancel)
    assert ("checking texts: 200 of 400 files" in [m for _, m in said]
            and "reading texts: 100 of 400 files" in [m for _, m in said]), said
    assert not any(m.startswith("reading texts: 150") for _, m in said)  # it stopped at the next checkpoint
    fractions = [f for f, _ in said]
    assert fractions == sorted(fractions) and 0 < fractions[-1] < 1, fractions
    assert ws.store.item_count() == 0 and (ws.root / "cdl.yaml").read_text() == yaml_before
    from runtime.jobs import Runner

    (state,) = [s for s in Runner(ws).statuses() if s.id == "data.import"]
    assert state.status == "cancelled"
    # and imported whole when nobody cancels it
    add_source(ws, folder)
    assert ws.store.item_count() == 400


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_csv_or_json_lines_file_is_read_with_progress_by_lines_and_can_be_stopped(tmp_path, monkeypatch, kind):
    """A file of rows (a 1 GB CSV reads for a minute) said nothing until it was read and written, and could not be
    stopped: its lines are counted as a folder's files are, and the write that follows is said as it starts."""
    import json

    monkeypatch.setattr(sources, "PROGRESS_FILES", 100)
    monkeypatch.setattr(sources, "PROGRESS_SECONDS", 0.0)
    ws = Workspace.init(tmp_path / "ws", "text-classification")
    path = tmp_path / f"news.{kind}"
    rows = [(f"item {i}, with a line\nbreak" if i % 7 == 0 else f"item {i}", "sport" if i % 2 else "news")
            for i in range(1000)]
    if kind == "csv":
        import csv

        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "label"])
            w.writerows(rows)
    else:
        path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    lines = path.read_bytes().count(b"\n")
    said: list[tuple[float, str]] = []
    cancel = threading.Event()

    def watch(ev) -> None:  # noqa: ANN001
        if ev.kind == EventKind.PROGRESS:
            said.append((ev.fraction, ev.message))
            if ev.message.startswith(f"reading {path.name}: ") and cancel_now:
                cancel.set()

    cancel_now = True
    with pytest.raises(DataImportError, match=f"{path.name}: import cancelled; nothing was imported"):
        add_source(ws, path, subscriber=watch, cancel=cancel)
    assert ws.store.item_count() == 0
    cancel_now = False
    said.clear()
    add_source(ws, path, subscriber=watch)
    assert ws.store.item_count() == 1000
    reads = [m for _, m in said if m.startswith(f"reading {path.name}: ")]
    assert len(reads) >= 5 and all(m.endswith(f" of {lines} lines") for m in reads), reads
    assert f"writing 1000 items of {path.name}" in [m for _, m in said], said
    fractions = [f for f, _ in said]
    assert fractions == sorted(fractions) and fractions[-1] <= 1, fractions


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_ctrl_c_stops_cdl_data_import_with_nothing_imported(tmp_path):
    ws = Workspace.init(tmp_path / "ws", "text-classification")
    yaml_before = (ws.root / "cdl.yaml").read_text()
    ws.close()
    folder = _texts(tmp_path / "texts", 20000)
    err = tmp_path / "err.txt"
    with open(err, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "data", "import", str(folder)],
                                stdout=subprocess.DEVNULL, stderr=fh,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal's
        deadline = time.monotonic() + 60
        while "data.import: started" not in err.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    text = err.read_text()
    assert proc.returncode == 130, text
    assert "SIGINT: cancelling" in text and "error: texts: import cancelled; nothing was imported" in text, text
    assert "Traceback" not in text
    ws = Workspace(tmp_path / "ws")
    assert ws.store.item_count() == 0 and (ws.root / "cdl.yaml").read_text() == yaml_before


def test_a_cancel_while_a_new_folder_is_first_hashed_stops_it_too(tmp_path, monkeypatch):
    """Before data.import starts, the runner takes its inputs' fingerprint: a new folder's files are read whole
    there (the cache knows none of them), with no step event yet. A cancel then stops it, the step not started."""
    monkeypatch.setattr(sources, "PROGRESS_FILES", 10)
    monkeypatch.setattr(sources, "PROGRESS_SECONDS", 0.0)
    cancel = threading.Event()
    tick = sources._FilesRead.tick
    ticks: list[str] = []

    def counted(self) -> None:  # noqa: ANN001
        ticks.append(self.verb)
        if len(ticks) == 25:
            cancel.set()
        tick(self)

    monkeypatch.setattr(sources._FilesRead, "tick", counted)
    ws = Workspace.init(tmp_path / "ws", "text-classification")
    events: list[str] = []
    with pytest.raises(DataImportError, match="import cancelled; nothing was imported"):
        add_source(ws, _texts(tmp_path / "texts", 200), subscriber=lambda ev: events.append(ev.kind.value),
                   cancel=cancel)
    assert len(ticks) == 30 and set(ticks) == {"checking"}, (len(ticks), set(ticks))  # stopped at the next look
    assert events == ["job-started", "job-finished"] and ws.store.last_step_run("data.import") is None
    assert ws.store.item_count() == 0


def _parquet_shards(root: Path) -> Path:
    import duckdb

    root.mkdir(parents=True)
    con = duckdb.connect()
    for split in ("train", "test"):
        con.execute(f"COPY (SELECT '{split} article ' || i AS text, i % 2 AS label FROM range(500) t(i)) "
                    f"TO '{root}/{split}-00000-of-00001.parquet' (FORMAT parquet)")
    return root


def _label_studio_export(path: Path) -> Path:
    import json

    tasks = [{"id": i + 1, "data": {"text": f"article {i} of the export"},
              "annotations": [{"id": i + 1, "result": [{"from_name": "category", "to_name": "text", "type": "choices",
                                                        "value": {"choices": ["sport" if i % 2 else "news"]}}]}]}
             for i in range(1000)]
    path.write_text(json.dumps(tasks))
    return path


def _idx_pairs(root: Path) -> Path:
    import gzip
    import struct

    root.mkdir(parents=True)
    for prefix, n in (("train", 60), ("t10k", 20)):
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">IIII", 0x803, n, 4, 4) + bytes((i * 16 + j) % 251 for i in range(n) for j in range(16))))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">II", 0x801, n) + bytes(i % 3 for i in range(n))))
    return root


@pytest.mark.parametrize(("kind", "make", "said_first", "said_later", "count"), [
    ("parquet", _parquet_shards, "reading shards (1 of 2 files)", "reading train-00000-of-00001.parquet: 100 of 500 rows",
     1000),
    ("label-studio", _label_studio_export, "reading export.json (0 MB)", "reading export.json: 100 of 1000 tasks",
     1000),
    ("idx", _idx_pairs, "reading fm: t10k-images-idx3-ubyte.gz (1 of 2 idx pairs)",
     "reading fm: train-images-idx3-ubyte.gz (2 of 2 idx pairs)", 80),
])
def test_parquet_label_studio_and_idx_sources_say_how_far_they_are_and_can_be_stopped(
        tmp_path, monkeypatch, kind, make, said_first, said_later, count):
    """They said nothing from "reading NAME" until the items were written, and a cancel waited for the whole read
    (a Label Studio export of 70 000 images reads for 8 s)."""
    monkeypatch.setattr(sources, "PROGRESS_FILES", 100)
    monkeypatch.setattr(sources, "PROGRESS_SECONDS", 0.0)
    name = {"parquet": "shards", "label-studio": "export.json", "idx": "fm"}[kind]
    source = make(tmp_path / name)
    ws = Workspace.init(tmp_path / "ws", "image-classification" if kind == "idx" else "text-classification")
    said: list[tuple[float, str]] = []
    cancel = threading.Event()
    cancel_at: str | None = said_later

    def watch(ev) -> None:  # noqa: ANN001
        if ev.kind == EventKind.PROGRESS:
            said.append((ev.fraction, ev.message))
            if ev.message == cancel_at:
                cancel.set()

    with pytest.raises(DataImportError, match=f"{name}: import cancelled; nothing was imported"):
        add_source(ws, source, subscriber=watch, cancel=cancel)
    assert ws.store.item_count() == 0
    messages = [m for _, m in said]
    assert said_first in messages and messages[-1] == said_later, messages
    cancel_at = None
    said.clear()
    add_source(ws, source, subscriber=watch)
    assert ws.store.item_count() == count
    messages = [m for _, m in said]
    assert said_first in messages and said_later in messages, messages
    fractions = [f for f, _ in said]
    assert fractions == sorted(fractions) and fractions[-1] <= 1, fractions
