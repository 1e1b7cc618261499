"""Reading a dataset index, the registry's items and labels, and the labeling progress fast, with the results the plain
code gave."""

from __future__ import annotations

import json
import random

import pytest

from runtime.domain.errors import WorkspaceError
from runtime.labeling import LabelState, _effective
from runtime.workspace.dataset import IndexRow, read_index, write_index


def _row(n: int, **over: object) -> IndexRow:
    d = {"uid": f"src:{n:04d}", "id": f"{n:064x}", "kind": "text", "source": f"src/{n}.txt", "label": "a" if n % 3
         else None, "conflict": n % 7 == 0, "split": "train", "pack": "p.bin", "offset": n * 10, "length": 10,
         "encoding": "utf-8"}
    d.update(over)
    return IndexRow(**d)


def test_an_index_reads_back_as_written(tmp_path):
    rows = [_row(n) for n in range(50)] + [_row(50, label="é ü \u2028 \"q\"", source="a\\b")]
    path = tmp_path / "index.jsonl"
    write_index(path, rows)
    back = read_index(path)
    assert back == sorted(rows, key=lambda r: r.uid)
    assert [hash(r) for r in back] == [hash(r) for r in sorted(rows, key=lambda r: r.uid)]
    assert all(type(r) is IndexRow for r in back)
    with pytest.raises(AttributeError):  # still frozen
        back[0].label = "b"  # type: ignore[misc]
    # blank lines (an editor's last one) are no rows
    path.write_bytes(b"\n" + path.read_bytes() + b"\n  \n")
    assert read_index(path) == back
    path.write_bytes(b"")
    assert read_index(path) == []


@pytest.mark.parametrize("bad, why", [
    (b'{"uid": "half a row', "Unterminated string"),  # not JSON
    (b'{"uid":"x"}', "missing"),  # too few fields
    (b"[1, 2]", "argument after ** must be a mapping"),  # a list, not a row
    (b"\xff", "'utf-8' codec"),  # not UTF-8
])
def test_a_line_that_is_no_row_is_named(tmp_path, bad, why):
    path = tmp_path / "index.jsonl"
    write_index(path, [_row(n) for n in range(5)])
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"\n".join([*lines[:3], bad, *lines[3:]]) + b"\n")
    with pytest.raises(WorkspaceError, match=r"index.jsonl: line 4: not an index row \(") as err:
        read_index(path)
    assert why in str(err.value)


def test_rows_read_whole_are_not_taken_from_lines_that_are_not_one_row_each(tmp_path):
    """One json.loads over the lines joined: two rows on one line, or a line that only makes sense joined to the
    next, would read as rows there; each is an error, as it was read a line at a time."""
    a, b = (json.dumps(r.__dict__) for r in (_row(1), _row(2)))
    path = tmp_path / "index.jsonl"
    path.write_text(f"{a}, {b}\n")
    with pytest.raises(WorkspaceError, match="line 1: not an index row"):
        read_index(path)
    path.write_text(f"{a[:-1]}\n" + "}\n")  # split inside a row
    with pytest.raises(WorkspaceError, match="line 1: not an index row"):
        read_index(path)
    extra = dict(_row(3).__dict__, more=1)
    path.write_text(f"{a}\n{json.dumps(extra)}\n")
    with pytest.raises(WorkspaceError, match="line 2: not an index row .*unexpected keyword argument 'more'"):
        read_index(path)


def _effective_as_it_was(facts):
    """The rules as written before the labels were read faster: the reference."""
    manual, imported, model = {}, {}, {}
    for rid, item, label, source in facts:
        if source == "manual":
            if item not in manual or rid > manual[item][0]:
                manual[item] = (rid, label)
        elif source == "import":
            found = imported.setdefault(item, set())
            if label:
                found.add(label)
        elif source == "model":
            if item not in model or rid > model[item][0]:
                model[item] = (rid, label)
    out = {item: LabelState(label, False, (label,), "manual") for item, (_, label) in manual.items()}
    for item, found in imported.items():
        if item not in out:
            out[item] = (LabelState(next(iter(found)), False, tuple(found), "import") if len(found) == 1 else
                         LabelState(None, True, tuple(sorted(found)), "import"))
    return out, model


def test_effective_labels_follow_the_rules_as_before():
    rng = random.Random(7)
    for _ in range(300):
        facts = sorted((rid, f"i{rng.randrange(6)}", rng.choice(["a", "b", "c", ""]),
                        rng.choice(["import", "import", "manual", "model"])) for rid in rng.sample(range(100), 12))
        want, model = _effective_as_it_was(facts)
        assert _effective(facts) == want, facts
        with_model = dict(want)
        for item, (_, label) in model.items():
            with_model.setdefault(item, LabelState(label, False, (label,), "model"))
        assert _effective(facts, use_model_labels=True) == with_model, facts


def test_frozen_many_makes_what_the_class_makes():
    import gc

    from runtime.domain.entities import Item
    from runtime.domain.frozen import fields_of, frozen_many

    rows = [(f"s:{i}", f"{i:064x}", "text", f"s/{i}", "a", None, "p.bin", i, 3, "bytes", "train") for i in range(5)]
    made = frozen_many(Item, rows)
    assert made == [Item(*r) for r in rows] and [hash(m) for m in made] == [hash(Item(*r)) for r in rows]
    with pytest.raises(AttributeError):
        made[0].split = "test"  # type: ignore[misc]
    with pytest.raises(ValueError):  # a row short of a field
        frozen_many(Item, [rows[0][:-1]])
    assert frozen_many(Item, [r[:2] for r in rows], fields=fields_of(Item)[:2])[0].__dict__ == {"uid": "s:0",
                                                                                                "id": f"{0:064x}"}
    assert gc.isenabled()  # given back, after an error too
    gc.disable()
    try:
        frozen_many(Item, rows)
        assert not gc.isenabled()  # and left off where the caller had it off
    finally:
        gc.enable()


def test_effective_states_read_from_the_facts_are_those_of_every_row(tmp_path):
    from runtime.labeling import effective_labels, effective_states
    from runtime.store import Store

    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        ids = [f"{i:064x}" for i in range(6)]
        store.replace_labels("file:a", [{"item_id": i, "label": lab, "labeler": "ls", "task_ref": "file:a"}
                                        for i, lab in zip(ids, "aabbcc", strict=True)])
        store.replace_labels("file:b", [{"item_id": ids[0], "label": "z", "labeler": "ls2", "task_ref": "file:b"}])
        store.add_label(ids[1], "m", "ana")
        store.add_label(ids[2], None, "ana", action="skip")
        store.add_label(ids[3], "q", "bot", source="model")
        store.add_label(ids[4], "w", "ana")
        store.undo_last("ana")
        for model in (False, True):
            want = effective_labels(store.labels(), model)
            assert effective_states(store, model) == want
        # each labeler's latest decision, read from the narrow rows as from whole ones (the Label Studio import)
        from runtime.labeling import latest_decisions

        store.add_label(ids[1], "n", "ana")  # a later decision of the same labeler on the same item
        whole = {k: (r.action, r.label, r.task_ref) for k, r in latest_decisions(store.labels()).items()}
        narrow: dict = {}
        for item, labeler, action, label, ref in store.decision_rows():
            narrow[(item, labeler)] = (action, label, ref)
        assert narrow == whole and narrow[(ids[1], "ana")] == ("label", "n", None)
        assert (ids[3], "bot") not in narrow and narrow[(ids[2], "ana")][0] == "skip"
        assert want[ids[0]].conflict and want[ids[1]].label == "m" and want[ids[3]].label == "b"
        assert want[ids[4]].label == "c"  # the label undone no longer counts
    finally:
        store.close()


def test_cdl_yaml_parsed_once_per_text_still_follows_every_edit_and_hands_out_copies(tmp_path):
    """Workspace.config() reads cdl.yaml on every call (the user may edit it); its YAML is parsed once per text.
    An edit is seen at once, and a config the caller changes does not change the next one."""
    from runtime.workspace import Workspace
    from runtime.workspace import config as config_mod

    ws = Workspace.init(tmp_path / "ws", "text-classification")
    try:
        cfg = ws.config()
        cfg.steps["model.train"]["epochs"] = 999
        cfg.labeling["classes"] = ["mutated"]
        again = ws.config()
        assert again.steps["model.train"]["epochs"] != 999 and again.labeling["classes"] == []
        path = ws.root / "cdl.yaml"
        assert "classes: []" in path.read_text()
        path.write_text(path.read_text().replace("classes: []", "classes: [a, b]"))
        assert ws.config().labeling["classes"] == ["a", "b"]
        for n in range(20):  # the cache keeps a few texts, not every one
            config_mod.parse_config(path.read_text() + f"# {n}\n")
        assert len(config_mod._PARSED) <= 8
    finally:
        ws.close()


def test_cdl_yaml_read_through_libyaml_is_what_pyyaml_reads_and_its_errors_are_pyyaml_s():
    """load_yaml parses with libyaml (eight times faster than pure Python) and must read every document as
    yaml.safe_load does: YAML 1.1 booleans, numbers PyYAML leaves as text (1e-3), dates, nulls, anchors, the
    templates. A text libyaml refuses is read again in pure Python, whose message names the character."""
    import datetime

    import yaml

    from runtime.workspace.config import _FAST_LOADER, load_yaml
    from runtime.workspace.workspace import RESOURCES

    assert yaml.__with_libyaml__ and _FAST_LOADER is yaml.CSafeLoader  # the pins install PyYAML's wheel with it
    texts = [p.read_text() for p in sorted((RESOURCES / "templates").glob("*.yaml"))]
    assert len(texts) >= 2
    texts.append("a: yes\nb: off\nc: 1e-3\nd: 1.0e-3\ne: 2021-06-01\nf: ~\ng: &x [1, 017, 0x1f]\nh: *x\n"
                 "i: '07'\nj: .inf\nk: {x: [a, {y: 'z: w'}]}\nl: |\n  two\n  lines\n")
    for text in texts:
        assert load_yaml(text) == yaml.safe_load(text)
    odd = load_yaml(texts[-1])
    assert odd["a"] is True and odd["b"] is False and odd["c"] == "1e-3" and odd["d"] == 0.001
    assert odd["e"] == datetime.date(2021, 6, 1) and odd["h"] == [1, 15, 31] and odd["i"] == "07"
    with pytest.raises(yaml.YAMLError) as err:
        load_yaml("steps:\n\t- tab\n")
    assert "found character '\\t' that cannot start any token" in str(err.value)
    with pytest.raises(yaml.YAMLError) as err:
        load_yaml("a: [1, 2\nb: 3\n")
    assert err.value.problem == "expected ',' or ']', but got ':'"


@pytest.mark.parametrize("shape", [(28, 28), (28, 28, 1), (5, 7, 3), (3, 9, 4), (1, 1), (64, 1)])
def test_the_export_s_own_png_decodes_to_the_same_pixels(shape):
    """The Label Studio export writes its images' PNGs itself (Pillow's save was 11 of 34 s for Fashion-MNIST):
    each must decode, with Pillow, to the very pixels."""
    import io

    import numpy as np
    from PIL import Image

    from runtime.labeling import _png

    pixels = np.random.default_rng(sum(shape)).integers(0, 256, size=shape, dtype=np.uint8)
    back = np.asarray(Image.open(io.BytesIO(_png(pixels))))
    assert np.array_equal(back, pixels[..., 0] if shape[-1:] == (1,) and len(shape) == 3 else pixels)
    # what it does not write itself goes through Pillow: still a PNG of those pixels
    wide = pixels.astype(np.uint16) * 200
    if len(shape) == 2:
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(_png(wide)))), wide)
