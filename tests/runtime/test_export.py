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
    assert out.stderr.splitlines()[-1] == f"exporting: {n} of {n} item(s)", out.stderr  # it printed "2000/10007"
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
    pngs = list((tmp_path / "fm-folder").rglob("*.png"))
    assert len(pngs) == 50
    # an idx row has no file name of its own: the file is named by the item's id ("_-3981d6a6e641.png", "_.png")
    ids = {r.id[:16] for r in ws.dataset().rows}
    assert {p.stem for p in pngs} <= ids, sorted(p.name for p in pngs)[:5]
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


def test_tensorflow_loads_without_its_start_up_lines_on_the_terminal():
    """TensorFlow 2.21 writes its start-up lines to file descriptor 2 whatever TF_CPP_MIN_LOG_LEVEL says; a Keras
    run printed absl's pre-init warning, oneDNN's and the CUDA stub's notes and "E0000 … failed call to cuInit:
    INTERNAL: CUDA error" in the middle of `cdl run`'s output. load_tensorflow leaves them out and lets anything else
    written to stderr through."""
    import subprocess
    import sys

    from runtime.ml.common import _TF_NOISE

    code = ("import sys\nfrom runtime.ml.common import load_tensorflow\ntf = load_tensorflow()\n"
            "assert load_tensorflow() is tf\nprint('mine', file=sys.stderr)\nprint(tf.__version__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == ["mine"], out.stderr
    # the lines it leaves out, as TensorFlow 2.21 writes them; another of its errors still shows
    noise = ["WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
             "I0000 00:00:1796516806.767371   21861 port.cc:153] oneDNN custom operations are on.\n",
             "I0000 00:00:1796516806.767717   21861 cudart_stub.cc:31] Could not find cuda drivers on your machine\n",
             "E0000 00:00:1796516808.852025   21861 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n"]
    assert all(_TF_NOISE.match(line) for line in noise)
    assert not _TF_NOISE.match("E0000 00:00:1796516808.852025   21861 op_kernel.cc:1830] OP_REQUIRES failed\n")
    assert not _TF_NOISE.match("Traceback (most recent call last):\n")
    # a process without file descriptor 2 (a daemon's) still loads it
    closed = "import os\nos.close(2)\nfrom runtime.ml.common import load_tensorflow\nprint(load_tensorflow().__version__)\n"
    out = subprocess.run([sys.executable, "-c", closed], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip(), out
