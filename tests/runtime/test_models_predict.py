"""`cdl models predict`: a registered version predicts from its checkpoint with its own preprocessing, before it
is exported or served (as `mlflow models predict` does). Checked against the model's predictions on its cached
test tensors, which model.evaluate scored."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from runtime.jobs import Runner
from runtime.ml.preprocess import load_transform
from runtime.ml.versus import predict_proba


def cdl(ws, *args: str) -> subprocess.CompletedProcess:  # noqa: ANN001
    return subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), *args], capture_output=True,
                          text=True)


def _registered(ws, n: int):  # noqa: ANN001, ANN202
    """ws:1 registered; its first n test items: the model, its probabilities on them, their texts and labels."""
    from runtime.workspace.dataset import decode_text

    assert Runner(ws).run(until="model.register", overrides={"model.tune": {"n_trials": 1}}).ok
    mv = ws.store.resolve_model("ws:1")
    prep = load_transform(ws, mv.transform)
    rows = {r.uid: r for r in ws.dataset().rows}
    uids = prep.uids_test[:n]
    return (mv, predict_proba(ws, mv, prep.X_test[:n]),
            [decode_text(ws.dataset().read_bytes(rows[u]))[0] for u in uids], [rows[u].label for u in uids])


def test_text_versions_predict_from_their_checkpoints(small_bbc, tmp_path):
    ws = small_bbc
    mv, expected, texts, _ = _registered(ws, 3)
    f = tmp_path / "third.txt"
    f.write_text(texts[2])
    out = cdl(ws, "models", "predict", "ws:1", "ws:challenger", "--text", texts[0], "--text", texts[1], "--file",
              str(f), "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)["predictions"]
    assert set(doc) == {"ws:1", "ws:challenger"} and doc["ws:1"] == doc["ws:challenger"]
    for p, e in zip(doc["ws:1"], expected, strict=True):
        assert p["label"] == mv.classes[int(e.argmax())]
        assert [p["probabilities"][c] for c in mv.classes] == pytest.approx(e.tolist(), abs=1e-5)
    assert doc["ws:1"][2]["input"] == str(f)
    text = cdl(ws, "models", "predict", "ws:1", "--text", texts[0]).stdout
    assert text.startswith("ws:1") and doc["ws:1"][0]["label"] in text
    # an empty text and one of words the model never saw got a class and a confidence, like an article, unmarked
    assert all(p["known_words"] > 10 for p in doc["ws:1"]), doc["ws:1"]
    out = cdl(ws, "models", "predict", "ws:1", "--text", "", "--text", "zzzqx qqqxw", "--text", texts[0], "--json")
    assert [p["known_words"] for p in json.loads(out.stdout)["predictions"]["ws:1"]][:2] == [0, 0], out.stdout
    lines = cdl(ws, "models", "predict", "ws:1", "--text", "zzzqx qqqxw", "--text", texts[0]).stdout.splitlines()
    assert "no word the model knows" in lines[0] and "no word the model knows" not in lines[1], lines
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))  # given a class as if an article
    (tmp_path / "notes.txt").write_bytes(texts[2].encode("utf-16"))  # UTF-16, as an editor saves it: read as text
    same = cdl(ws, "models", "predict", "ws:1", "--file", str(tmp_path / "notes.txt"), "--json")
    assert json.loads(same.stdout)["predictions"]["ws:1"][0]["probabilities"] == pytest.approx(
        doc["ws:1"][2]["probabilities"], abs=1e-5)
    for args, says in ((["--file", str(tmp_path / "gone.txt")], "gone.txt: no such file"),
                       (["--file", str(tmp_path / "photo.png")], "photo.png: an image, not text: ws:1 is a text model"),
                       ([], "nothing to predict"), (["--text", "x", "ws:9"], "no version 9"),
                       ([texts[0][:40]], f"nothing to predict: {texts[0][:40]!r} was read as a model reference "
                                         "(NAME:VERSION); inputs follow --text or --file: `cdl models predict ws:1 "
                                         "--text "),
                       ([str(f)], f"inputs follow --text or --file: `cdl models predict ws:1 --file {f}`")):
        bad = cdl(ws, "models", "predict", "ws:1", *args)
        assert bad.returncode == 2 and says in bad.stderr, bad.stderr


def test_a_whole_file_or_folder_is_scored_and_written(small_bbc, tmp_path):
    """`cdl models predict REF --input FILE -o OUT`, as `mlflow models predict -i` scores a file: only --text and
    --file existed, one input a flag."""
    import csv
    import os

    ws = small_bbc
    mv, expected, texts, labels = _registered(ws, 4)
    src = tmp_path / "batch.csv"
    with open(src, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "body", "category"])
        w.writerows([i, t, lab] for i, (t, lab) in enumerate(zip(texts, labels, strict=True)))
    gibberish = tmp_path / "gibberish.csv"
    gibberish.write_bytes(src.read_bytes() + b"9,zzzqx qqqxw,\n")
    out = cdl(ws, "models", "predict", "ws:1", "--input", str(gibberish), "--text-column", "body", "-o",
              str(tmp_path / "g.csv"))
    assert "ws:1: 1 of 5 text(s) have no word the model knows" in out.stderr, out.stderr
    with open(tmp_path / "g.csv", newline="") as fh:
        assert [int(r["known_words"]) == 0 for r in csv.DictReader(fh)] == [False] * 4 + [True]
    out = cdl(ws, "models", "predict", "ws:1", "--input", str(src), "--text-column", "body", "-o",
              str(tmp_path / "out.csv"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "no word the model knows" not in out.stderr
    with open(tmp_path / "out.csv", newline="") as fh:
        got = list(csv.DictReader(fh))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out.csv").stat().st_mode & 0o777 == 0o666 & ~umask  # as any file, not owner-only
    # each row by the line it ends on (data.import's key; these texts span lines), in the file's order
    assert all(g["input"].startswith("row") for g in got) and [g["given"] for g in got] == labels
    assert sorted(got, key=lambda g: int(g["input"][3:])) == got
    for g, e in zip(got, expected, strict=True):
        assert [float(g[c]) for c in mv.classes] == pytest.approx(e.tolist(), abs=1e-5)
        assert g["label"] == mv.classes[int(e.argmax())]
    right = sum(g["label"] == g["given"] for g in got)
    assert f"ws:1: {right} of 4 agree with the labels the input gives" in out.stderr
    assert "wrote 4 prediction(s)" in out.stderr
    # the same file as Excel on Windows saves it (cp1252): --encoding reads it, the same answers
    win = tmp_path / "win.csv"
    win.write_bytes(src.read_text().replace("\n", "\r\n").replace("body", "b\u00f6dy").encode("cp1252"))
    refused = cdl(ws, "models", "predict", "ws:1", "--input", str(win))
    assert refused.returncode == 2 and "--encoding cp1252" in refused.stderr, refused.stderr
    out = cdl(ws, "models", "predict", "ws:1", "--input", str(win), "--encoding", "cp1252", "--text-column",
              "b\u00f6dy", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    assert [p["label"] for p in json.loads(out.stdout)["predictions"]["ws:1"]] == [g["label"] for g in got], out.stdout[:500]
    # a folder of class folders (the BBC layout): every file, the folder its label; JSON Lines out
    for i, (t, lab) in enumerate(zip(texts, labels, strict=True)):
        (tmp_path / "news" / lab).mkdir(parents=True, exist_ok=True)
        (tmp_path / "news" / lab / f"{i}.txt").write_text(t)
    (tmp_path / "news" / labels[0] / "2024").mkdir()  # a folder in a class folder: that class, as data.import says
    (tmp_path / "news" / labels[0] / "2024" / "late.txt").write_text(texts[0])
    # a photo among the articles is left out, and said: it was scored as a text ("sport 0.879")
    (tmp_path / "news" / labels[0] / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    out = cdl(ws, "models", "predict", "ws:latest", "--input", str(tmp_path / "news"), "-o", str(tmp_path / "o.jsonl"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"news: ignored 1 file(s) that are no text (an image or a binary file): {labels[0]}/photo.png" \
        in out.stderr, out.stderr
    docs = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    # the file names the version the alias stood for (it wrote "ws:latest", which moves on)
    assert {d["model"] for d in docs} == {"ws:1"}, {d["model"] for d in docs}
    assert sorted((d["input"], d["given"]) for d in docs) == sorted(
        [(f"{lab}/{i}.txt", lab) for i, lab in enumerate(labels)] + [(f"{labels[0]}/2024/late.txt", labels[0])])
    for args, says in ((["--input", str(src), "--text", "x"], "give --input alone"),
                       (["--text", "x", "-o", str(tmp_path / "x.csv")], "-o writes the predictions of --input"),
                       (["--input", str(src), "--text-column", "text"], "batch.csv: no column 'text' (columns: id, "
                                                                        "body, category)"),
                       (["--input", str(tmp_path / "none.csv")], "none.csv: does not exist"),
                       (["--text", "x", "--encoding", "cp1252"], "--encoding is about --input's file")):
        bad = cdl(ws, "models", "predict", "ws:1", *args)
        assert bad.returncode == 2 and says in bad.stderr, bad.stderr
    assert not (tmp_path / "x.csv").exists()


def test_image_versions_predict_image_files(tmp_path):
    from PIL import Image

    from tests.conftest import tiny_fashion_workspace

    ws = tiny_fashion_workspace(tmp_path / "fm", 300, 60)
    assert Runner(ws).run(until="model.register").ok
    mv = ws.store.resolve_model("fm:1")
    prep = load_transform(ws, mv.transform)
    rows = {r.uid: r for r in ws.dataset().rows}
    raw = ws.dataset().images([rows[u] for u in prep.uids_test[:2]])
    files = []
    for i, img in enumerate(raw):
        files.append(tmp_path / f"item{i}.png")
        Image.fromarray(np.asarray(img).reshape(28, 28)).save(files[-1])  # its own size: no resizing
    expected = predict_proba(ws, mv, prep.X_test[:2])
    out = cdl(ws, "models", "predict", "fm:1", "--file", str(files[0]), "--file", str(files[1]), "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)["predictions"]["fm:1"]
    for p, e in zip(got, expected, strict=True):
        assert [p["probabilities"][c] for c in mv.classes] == pytest.approx(e.tolist(), abs=1e-5)
    bad = cdl(ws, "models", "predict", "fm:1", "--text", "a shoe")
    assert bad.returncode == 2 and "is an image model: give image files with --file" in bad.stderr
    notimg = tmp_path / "notes.txt"
    notimg.write_text("not an image")
    bad = cdl(ws, "models", "predict", "fm:1", "--file", str(notimg))
    assert bad.returncode == 2 and "notes.txt: not an image this model can take" in bad.stderr
    # --input: a folder of images, every one resized as training did; a text file among them is named
    from runtime.ml.predict import predict_source

    (tmp_path / "imgs").mkdir()
    for f in files:
        Image.open(f).resize((56, 56)).save(tmp_path / "imgs" / f.name)  # twice the size: fitted back to 28x28
    got = predict_source(ws, "fm:1", tmp_path / "imgs")
    assert [g["input"] for g in got] == ["item0.png", "item1.png"] and got[0]["given"] is None
    assert [g["label"] for g in got] == [mv.classes[int(e.argmax())] for e in expected]
    bad = cdl(ws, "models", "predict", "fm:1", "--input", str(tmp_path / "imgs"), "--text-column", "x")
    assert bad.returncode == 2 and "the option 'text_column' is not for an image-folder source" in bad.stderr, bad.stderr
    (tmp_path / "imgs" / "notes.txt").write_text("shot on the 3rd")  # left out, and said (it was not)
    ok = cdl(ws, "models", "predict", "fm:1", "--input", str(tmp_path / "imgs"), "-o", str(tmp_path / "p.csv"))
    assert ok.returncode == 0 and "imgs: ignored 1 file(s) that are no image (.txt): notes.txt" in ok.stderr, ok.stderr
    assert "wrote 2 prediction(s)" in ok.stderr
    (tmp_path / "imgs" / "zz.png").write_text("not an image")
    bad = cdl(ws, "models", "predict", "fm:1", "--input", str(tmp_path / "imgs"))
    assert bad.returncode == 2 and "imgs: zz.png: not an image this model can take (no image format Pillow reads)" \
        in bad.stderr, bad.stderr  # it said "(cannot identify image file <_io.BytesIO object at 0x7f…>)"
    assert "BytesIO" not in bad.stderr
    # a transform `cdl gc` dropped is fitted again, and said: ten seconds for Fashion-MNIST went without a word
    import shutil

    shutil.rmtree(ws.root / ws.store.get_transform(mv.transform).path)
    ok = cdl(ws, "models", "predict", "fm:1", "--file", str(files[0]))
    assert ok.returncode == 0, ok.stderr
    assert f"fm:1: transform {mv.transform[:12]} is not cached: fitting it again from v1" in ok.stderr, ok.stderr
