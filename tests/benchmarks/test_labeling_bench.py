"""The labeling queue on the full Fashion-MNIST workspace (70 000 labeled items): what the annotation panel does
for each item it shows, against reading the dataset's index once, measured in the same run."""

from __future__ import annotations

import time

from runtime.api import add_source
from runtime.jobs import Runner
from runtime.workspace import Workspace
from runtime.workspace.dataset import DatasetView
from tests.conftest import FASHION, need


def test_labeling_queue_per_item_on_fashion_mnist(tmp_path, record):
    from runtime.labeling import LabelQueue
    from runtime.proposals import proposals

    need(FASHION)
    ws = Workspace.init(tmp_path / "ws", "image-classification")
    add_source(ws, FASHION, {"class_names": "fashion-mnist"})
    assert Runner(ws).run(until="data.label").ok
    t0 = time.perf_counter()
    DatasetView.open(ws.dataset_dir)
    index_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    ws.store.labels()
    labels_read = time.perf_counter() - t0
    classes = LabelQueue(ws, "bench").classes()
    n = 20
    first = None
    t0 = time.perf_counter()
    for k in range(n):
        q = LabelQueue(ws, "bench")  # as the panel does: a queue for each load
        item = q.next("all")
        q.content(item.uid)
        q.classes()
        q.progress()
        proposals(ws)
        q.set_label(item.uid, classes[k % len(classes)])
        if first is None:
            first = time.perf_counter() - t0
    per_item = (time.perf_counter() - t0 - first) / (n - 1)
    labeled = sum(1 for r in ws.store.labels() if r.source == "manual")
    record("labeling.fashion_mnist_per_item", items=len(ws.dataset().rows), first_item_s=round(first, 3),
           per_item_s=round(per_item, 3), index_read_s=round(index_read, 3), labels_read_s=round(labels_read, 3),
           per_item_vs_index_read=round(per_item / index_read, 2),
           note="next + content + classes + progress + proposals + set_label, a new LabelQueue each time as the "
                "panel makes; the first item fills the caches (index, every item's label state)")
    assert labeled == n
    assert per_item < index_read  # each item used to read the index and every label several times
    ws.close()
