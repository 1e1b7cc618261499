"""`cdl data export`: a dataset version out of the workspace, in formats `cdl data import` reads back as the same
items, labels and splits (there was no way to take a labeled dataset out but a Label Studio export)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from runtime.api import add_source
from runtime.domain.errors import CdlError
from runtime.export import export_version
from runtime.jobs import Runner
from runtime.workspace import Workspace


def _items(ws: Workspace, as_text: bool = False) -> Counter:
    """(content id, label, split) of every item; as_text: the id of the text as data.clean decodes it (sport/199.txt
    is not valid UTF-8: its export holds the replacement character, so it comes back as other bytes)."""
    import hashlib

    from runtime.workspace.dataset import decode_text

    view = ws.dataset()
    return Counter((hashlib.sha256(decode_text(view.read_bytes(r))[0].encode()).hexdigest() if as_text else r.id,
                    r.label, r.split) for r in view.rows)


def test_a_text_version_goes_out_and_comes_back_the_same(small_bbc, tmp_path):
    ws = small_bbc
    here = _items(ws, as_text=True)
    n = sum(here.values())
    assert here and all(lab is not None for _, lab, _ in here)
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "data", "export",
                          str(tmp_path / "v1.jsonl")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"wrote {n} item(s) of v1 (test ") and "to " in out.stdout
    for name in ("v1.jsonl", "v1.csv", "v1.parquet", "v1-folder"):
        if name != "v1.jsonl":
            doc = export_version(ws, tmp_path / name)
            assert doc["items"] == n and doc["version"] == "v1"
        back = Workspace.init(tmp_path / f"back-{name}", "text-classification")
        add_source(back, tmp_path / name)
        assert Runner(back).run(until="data.version").ok
        got = _items(back)
        if name == "v1.csv":  # a CSV has no split column import reads: split anew
            got = Counter((i, lab) for i, lab, _ in got.elements())
            want = Counter((i, lab) for i, lab, _ in here.elements())
        else:
            want = here
        assert got == want, name
        back.close()
    # the folder is SPLIT/CLASS/FILE, each file under its imported name
    train = sorted(p.relative_to(tmp_path / "v1-folder").as_posix() for p in (tmp_path / "v1-folder").rglob("*.txt"))
    assert train[0].split("/")[0] in ("test", "train") and train[0].endswith(".txt")
    assert {p.name for p in (tmp_path / "v1-folder").iterdir()} == {"test", "train"}
    # refused, each naming what to do; nothing written
    with pytest.raises(CdlError, match="already exists; give a new file"):
        export_version(ws, tmp_path / "v1.csv")
    with pytest.raises(CdlError, match="no version 'v9'|v9"):
        export_version(ws, tmp_path / "x.csv", "v9")
    only_test = export_version(ws, tmp_path / "test.jsonl", split="test")
    lines = [json.loads(x) for x in (tmp_path / "test.jsonl").read_text().splitlines()]
    assert only_test["splits"] == {"test": len(lines)} and {x["split"] for x in lines} == {"test"}


def test_quarantined_items_are_left_out_unless_asked_for(text_ws, tmp_path):
    ws = text_ws
    rows = ["text,label"] + [f"a text long enough to pass validation number {i},{'ab'[i % 2]}" for i in range(10)]
    rows.append("short,a")  # under data.validate's min_length: quarantined
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    add_source(ws, tmp_path / "t.csv")
    with pytest.raises(CdlError, match=r"no dataset version yet: run the data pipeline"):
        export_version(ws, tmp_path / "none.csv")
    assert Runner(ws).run(until="data.validate").ok
    doc = export_version(ws, tmp_path / "out.csv")
    assert doc["items"] == 10 and doc["left_out_quarantined"] == 1
    assert "short" not in (tmp_path / "out.csv").read_text()
    doc = export_version(ws, tmp_path / "all.csv", quarantined=True)
    assert doc["items"] == 11 and doc["left_out_quarantined"] == 0
    assert not list(tmp_path.glob(".out.csv.*"))  # the temporary folder is gone


def test_an_image_version_goes_out_as_parquet_or_a_folder(tmp_path):
    from tests.conftest import tiny_fashion_workspace

    ws = tiny_fashion_workspace(tmp_path / "fm", 40, 10)
    assert Runner(ws).run(until="data.version").ok
    view = ws.dataset()
    pixels = {r.id: view.read_image(r) for r in view.rows}
    with pytest.raises(CdlError, match="images go to a .parquet file or a folder, not a csv file"):
        export_version(ws, tmp_path / "fm.csv")
    export_version(ws, tmp_path / "fm.parquet")
    assert export_version(ws, tmp_path / "fm-folder")["renamed_classes"] == {"T-shirt/top": "T-shirt_top"}
    assert len(list((tmp_path / "fm-folder").rglob("*.png"))) == 50
    for name in ("fm.parquet", "fm-folder"):
        back = Workspace.init(tmp_path / f"back-{name}", "image-classification")
        add_source(back, tmp_path / name)
        assert Runner(back).run(until="data.version").ok
        bview = back.dataset()
        got = {r.label: [] for r in bview.rows}
        for r in bview.rows:  # re-encoded as PNG: new content ids, the same pixels and labels
            got[r.label].append(bview.read_image(r).tobytes())
        named = {"T-shirt/top": "T-shirt_top"} if name == "fm-folder" else {}  # a folder's name has no "/"
        want = {named.get(r.label, r.label): [] for r in view.rows}
        for r in view.rows:
            want[named.get(r.label, r.label)].append(pixels[r.id].tobytes())
        assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in want.items()}, name
        # the split comes back too: Parquet's split column, the folder's train/ and test/
        assert sorted(r.split for r in bview.rows) == sorted(r.split for r in view.rows), name
        back.close()
    assert np.asarray(next(iter(pixels.values()))).shape == (28, 28)
    ws.close()
