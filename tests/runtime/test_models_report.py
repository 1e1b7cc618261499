"""`cdl models report NAME:VERSION -o FILE.html`: one self-contained page on a model version (a model card),
checked against the registry it comes from."""

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser

from runtime.registry import review


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001, ANN201
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href") and v and not v.startswith("#"):
                self.external.append(v)

    def handle_data(self, data):  # noqa: ANN001, ANN201
        self.text.append(data)


def test_a_model_report_is_one_self_contained_page(packaged, tmp_path):
    ws = packaged
    review(ws.store, "ws:1", True, "<script>alert('x')</script> fine", "vera")
    out = tmp_path / "ws-1.html"
    r = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "models", "report", "ws:1", "-o",
                        str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout
    page = out.read_text()
    p = _Page()
    p.feed(page)
    text = " ".join(p.text)
    mv = ws.store.resolve_model("ws:1")
    assert "script" not in p.tags and p.external == []  # nothing runs, nothing is fetched
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page  # a comment is text, not markup
    assert p.tags.count("svg") == 2 and p.tags.count("polyline") == 4  # accuracy and loss, train and val
    assert f"{mv.metrics['test_accuracy']:.4f}" in text and mv.dataset_version in text
    assert all(c in text for c in mv.classes)
    cm = mv.evaluation["confusion_matrix"]
    cells = re.findall(r"<td class='n' style='background[^>]*>(\d+)</td>", page)
    assert [int(c) for c in cells] == [v for row in cm for v in row]
    variants = [v.variant for v in ws.store.variants("ws", 1)]
    assert variants and all(f"<td>{v}</td>" in page for v in variants)
    assert "approved" in text and "vera" in text
    # the tuning experiment by name, as the lineage's lines give it (its id alone was shown)
    if mv.tune_experiment_id is not None:
        name = ws.store.experiment(mv.tune_experiment_id).name
        assert f"<td>tuning experiment</td><td>{name} (#{mv.tune_experiment_id})</td>" in page, page[:3000]
    bad = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "models", "report", "ws:7", "-o",
                          str(tmp_path / "x.html")], capture_output=True, text=True)
    assert bad.returncode == 2 and "no version 7" in bad.stderr and not (tmp_path / "x.html").exists()
