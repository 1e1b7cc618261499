"""Reading a dataset index and the labels table fast, with the results the plain code gave."""

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
