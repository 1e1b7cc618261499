"""Labels: the queue, conflicts, and Label Studio JSON import/export against real exports."""

from __future__ import annotations

import json
import re

import pytest

from runtime.api import add_source
from runtime.domain.errors import CdlError, DataImportError
from runtime.jobs import Runner
from runtime.labeling import LabelQueue, effective_labels, export_label_studio, import_label_studio
from tests.conftest import make_bbc_subset


@pytest.fixture
def unlabeled_ws(tmp_path, text_ws):
    """BBC articles imported from a CSV without labels, through the data pipeline."""
    import csv
    import zipfile

    src = make_bbc_subset(tmp_path / "bbc.zip", per_class=4)
    csv_path = tmp_path / "articles.csv"
    with zipfile.ZipFile(src) as zf, open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text"])
        for n in zf.namelist():
            if n.endswith(".txt"):
                w.writerow([zf.read(n).decode("utf-8", "replace")])
    add_source(text_ws, csv_path, {"unlabeled": True})
    assert Runner(text_ws).run(until="data.label").ok
    return text_ws


def test_queue_next_set_skip_undo(unlabeled_ws):
    ws = unlabeled_ws
    q = LabelQueue(ws, "alice")
    total = q.progress()["total"]
    assert q.progress() == {"total": total, "labeled": 0, "conflicts": 0, "unlabeled": total}
    first = q.next()
    q.set_label(first.uid, "tech")
    assert q.progress()["labeled"] == 1
    second = q.next()
    assert second.uid != first.uid
    q.skip(second.uid)
    third = q.next()
    assert third.uid not in (first.uid, second.uid)
    # undo the skip: the skipped item comes back first
    assert q.undo().action == "skip"
    assert q.next().uid == second.uid
    # undo the label: the first item is unlabeled again
    assert q.undo().action == "label"
    assert q.progress()["labeled"] == 0
    assert q.next().uid == first.uid
    # another labeler has their own skips
    q.skip(first.uid)
    assert LabelQueue(ws, "bob").next().uid == first.uid
    assert isinstance(q.content(first.uid), str) and len(q.content(first.uid)) > 20


def test_an_item_is_named_as_the_cli_and_the_panel_show_it(unlabeled_ws):
    """The panel showed an item's source ("articles.csv#row2"), which `cdl labels set` refused ("not in the
    checked-out dataset version"); the panel shows the uid now, and the source is taken too."""
    from click.testing import CliRunner

    from runtime.cli import cli

    ws = unlabeled_ws
    item = LabelQueue(ws, "alice").next()
    assert item.uid != item.source  # "articles.csv:row2" and "articles.csv#row2"
    for ref in (item.source, item.uid):
        r = CliRunner().invoke(cli, ["-w", str(ws.root), "labels", "set", ref, "tech", "--labeler", "alice"])
        assert r.exit_code == 0 and r.output == f"{item.uid} ({item.item_id[:12]}) -> tech (by alice)\n", (ref, r.output)
    # undo says what it undid, of which item, and what the item has now (it said "undid label of 432d183c7df2")
    def cli_(*args):
        r = CliRunner().invoke(cli, ["-w", str(ws.root), "labels", *args, "--labeler", "alice"])
        assert r.exit_code == 0, r.output
        return r.output

    assert cli_("undo") == f"undid alice's label tech of {item.uid} ({item.item_id[:12]}); it is labeled tech now\n"
    assert cli_("undo") == f"undid alice's label tech of {item.uid} ({item.item_id[:12]}); it is unlabeled now\n"
    assert cli_("skip", item.uid) == f"skipped {item.uid} ({item.item_id[:12]})\n"
    assert cli_("undo") == f"undid alice's skip of {item.uid} ({item.item_id[:12]}); it is unlabeled now\n"
    # a short name that fits several items names some of them, as git does for a short hash (it gave a count alone)
    uids = sorted(r.uid for r in ws.dataset().rows if r.uid.endswith("1") or r.id.startswith("1"))
    assert len(uids) > 1
    with pytest.raises(CdlError) as err:
        LabelQueue(ws, "alice").set_label("1", "tech")
    assert str(err.value).startswith(f"item '1' is ambiguous ({len(uids)} matches: {uids[0]}, {uids[1]}"), err.value
    assert str(err.value).endswith("; give the full id")


def test_two_labelers_are_handed_different_items(unlabeled_ws):
    """As Label Studio locks a task for its annotator: the item one labeler has open goes to no one else
    until it is labeled or skipped, or its lease runs out."""
    import time

    ws = unlabeled_ws
    ann, bob = LabelQueue(ws, "ann"), LabelQueue(ws, "bob", lease_seconds=1.0)
    a = ann.next()
    b = bob.next()
    assert a.uid != b.uid
    assert ann.next().uid == a.uid  # asking again (the panel refreshing) keeps her item
    ann.set_label(a.uid, "tech")
    a2 = ann.next()
    assert a2.uid not in (a.uid, b.uid)  # bob still has his
    time.sleep(1.2)  # bob's lease ran out (he walked away)
    ann.skip(a2.uid)
    assert ann.next().uid == b.uid
    # every remaining item open with someone else: nothing for bob, and the CLI says why
    rest = [q for q in LabelQueue(ws, "x").rows() if q.uid != b.uid]
    for k, q in enumerate(rest):
        assert ws.store.lease_item(f"other{k}", [q.item_id], 60) == q.item_id
    bob.lease_seconds = 60
    assert bob.next() is None
    from click.testing import CliRunner

    from runtime.cli import cli

    out = CliRunner().invoke(cli, ["-w", str(ws.root), "labels", "next", "--labeler", "cy", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == {"item": None, "open_with_other_labelers": len(rest) + 1}


def test_labels_join_the_next_version(unlabeled_ws):
    ws = unlabeled_ws
    q = LabelQueue(ws, "alice")
    for label in ("tech", "sport", "tech"):
        q.set_label(q.next().uid, label)
    assert Runner(ws).run(until="data.label").ok
    versions = ws.store.versions()
    assert len(versions) == 2
    assert versions[-1].classes["tech"] == 2 and versions[-1].classes["sport"] == 1


def test_items_imported_after_the_dataset_was_made_are_in_the_queue_at_once(unlabeled_ws, tmp_path):
    """A CSV imported (`cdl data import`) after the checked-out dataset was made: its items are in the labeling
    queue and its progress at once, as in Label Studio after an import; they said "nothing left to label" until
    data.ingest ran. Their labels go into the next version with them."""
    import csv

    ws = unlabeled_ws
    q = LabelQueue(ws, "alice")
    while (item := q.next()) is not None:  # the dataset's items first
        q.set_label(item.uid, "tech")
    assert q.progress()["unlabeled"] == 0
    texts = ["The central bank raised interest rates again as inflation stayed high in the euro zone",
             "The striker scored twice as the club won the cup final in extra time on Saturday"]
    with open(tmp_path / "more.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text"])
        w.writerows([t] for t in texts)
    add_source(ws, tmp_path / "more.csv", {"unlabeled": True})
    q.refresh()
    before = q.progress()
    assert before["unlabeled"] == 2 and before["total"] == before["labeled"] + 2, before
    # a Label Studio export has them too, and its annotations come back to them
    export_label_studio(ws, tmp_path / "ls.json")
    tasks = [t for t in json.loads((tmp_path / "ls.json").read_text()) if t["data"]["text"] in texts]
    assert len(tasks) == 2 and not any(t["annotations"] for t in tasks)
    tasks[0]["annotations"] = [{"id": 1, "completed_by": 7, "was_cancelled": False, "result": [
        {"from_name": "category", "to_name": "text", "type": "choices", "value": {"choices": ["politics"]}}]}]
    (tmp_path / "ls-done.json").write_text(json.dumps(tasks))
    assert import_label_studio(ws, tmp_path / "ls-done.json")["labels"] == 1
    assert q.progress()["unlabeled"] == 1
    ws.store.replace_labels("ls:ls-done.json#", [])  # as it was: the labelers below give these two their labels
    got = []
    for label in ("business", "sport"):
        item = q.next()
        got.append(q.content(item.uid))
        q.set_label(item.uid, label)
    assert got == texts and q.next() is None
    assert Runner(ws).run(until="data.label").ok
    version = ws.store.versions()[-1]
    assert version.classes["business"] == 1 and version.classes["sport"] == 1, version.classes
    q.refresh()
    assert q.progress() == {**before, "labeled": before["labeled"] + 2, "unlabeled": 0}


def test_conflicts_are_recorded_not_resolved(unlabeled_ws):
    ws = unlabeled_ws
    item = ws.dataset().rows[0]
    ws.store.add_label(item.id, "tech", "ls:1", "import")
    ws.store.add_label(item.id, "business", "ls:2", "import")
    st = effective_labels(ws.store.labels())[item.id]
    assert st.conflict and st.label is None and st.candidates == ("business", "tech")
    q = LabelQueue(ws, "carol")
    assert [c.item_id for c in q.rows("conflicts")] == [item.id]
    q.set_label(item.uid, "tech")  # a manual decision resolves it
    assert effective_labels(ws.store.labels())[item.id].label == "tech"
    assert q.rows("conflicts") == []


def test_a_conflict_exported_to_label_studio_is_decided_there_by_ground_truth(unlabeled_ws, tmp_path):
    """Two sources disagree on an item; exported with `--filter conflicts`, a reviewer in Label Studio marks an
    annotation as ground truth (its star), and the import takes it as the decision. It was one more imported
    opinion, so the conflict could not be resolved in Label Studio, and the import said "1 conflict(s)" whatever
    the file decided."""
    ws = unlabeled_ws
    item = ws.dataset().rows[0]
    ws.store.add_label(item.id, "tech", "import:a.csv", "import")
    ws.store.add_label(item.id, "business", "import:b.csv", "import")
    export_label_studio(ws, tmp_path / "conflicts.json", filter="conflicts")
    tasks = json.loads((tmp_path / "conflicts.json").read_text())
    assert len(tasks) == 1 and len(tasks[0]["annotations"]) == 2
    # a second annotator in Label Studio, who agrees with one of them: still a conflict, and said so
    ann = json.loads(json.dumps(tasks[0]["annotations"][0]))
    ann.update(id=50, completed_by=7, meta={}, ground_truth=False)
    ann["result"][0]["value"]["choices"] = ["business"]
    tasks[0]["annotations"].append(ann)
    (tmp_path / "opinion.json").write_text(json.dumps(tasks))
    assert import_label_studio(ws, tmp_path / "opinion.json")["conflicts"] == 1
    assert effective_labels(ws.store.labels())[item.id].conflict
    # the reviewer stars it as ground truth
    ann["ground_truth"] = True
    (tmp_path / "opinion.json").write_text(json.dumps(tasks))
    assert import_label_studio(ws, tmp_path / "opinion.json")["conflicts"] == 0
    st = effective_labels(ws.store.labels())[item.id]
    assert not st.conflict and st.label == "business"
    assert LabelQueue(ws, "carol").rows("conflicts") == []


def test_a_label_studio_export_as_a_source_takes_its_ground_truth(text_ws, ls_dir, tmp_path):
    """The real text export, imported as a data source, after a second annotator disagreed on its first task and
    a reviewer starred one annotation as ground truth: the item has that label, no conflict; the star moved and the
    file imported again, the label follows and nothing piles up. The annotations were all one more opinion."""
    from runtime.labeling import current_states

    tasks = json.loads((ls_dir / "text_classification_export.json").read_text())
    first = tasks[0]["annotations"][0]
    given = first["result"][0]["value"]["choices"][0]
    other = json.loads(json.dumps(first))
    other.update(id=900, completed_by=9, ground_truth=False)
    other["result"][0]["value"]["choices"] = ["tech" if given != "tech" else "sport"]
    tasks[0]["annotations"].append(other)
    src = tmp_path / "project.json"

    def label_of_first() -> tuple[str | None, bool, int]:
        item = next(i for i in text_ws.store.items() if i.source.endswith("#task1") or i.source.endswith(":task1"))
        st = current_states(text_ws.store)[item.id]
        return st.label, st.conflict, len([r for r in text_ws.store.labels() if r.item_id == item.id])

    src.write_text(json.dumps(tasks))
    assert add_source(text_ws, src).ok
    assert label_of_first() == (None, True, 2)  # two annotators disagree, nobody decided
    tasks[0]["annotations"][1]["ground_truth"] = True  # the reviewer's star on the second
    src.write_text(json.dumps(tasks))
    assert Runner(text_ws).run(steps=["data.import"]).ok
    assert label_of_first() == (other["result"][0]["value"]["choices"][0], False, 2)
    tasks[0]["annotations"][1]["ground_truth"], tasks[0]["annotations"][0]["ground_truth"] = False, True
    src.write_text(json.dumps(tasks))
    assert Runner(text_ws).run(steps=["data.import"]).ok
    assert label_of_first() == (given, False, 2)
    item = next(i for i in text_ws.store.items() if i.source.endswith("task1"))
    assert item.source_label == given  # the split's stratum too


def test_a_label_studio_export_saved_with_a_byte_order_mark_imports(text_ws, ls_dir, tmp_path):
    """A JSON file an editor on Windows saved as "UTF-8 with BOM" (Notepad, PowerShell's Out-File): refused with
    "malformed JSON at line 1 column 1: Unexpected UTF-8 BOM", by `data import` and `labels import` alike."""
    body = (ls_dir / "text_classification_export.json").read_bytes()
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + body)
    assert add_source(text_ws, tmp_path / "bom.json").ok
    assert len(text_ws.store.items()) == len(json.loads(body))
    assert import_label_studio(text_ws, tmp_path / "bom.json")["tasks"] == len(json.loads(body))


def test_import_real_label_studio_exports(bbc_ws, ls_dir):
    for name in ("text_classification_export.json", "text_classification_export_min.json"):
        out = import_label_studio(bbc_ws, ls_dir / name)
        assert out["tasks"] == 9 and out["labels"] == 9 and out["unmatched"] == 0
    recs = [r for r in bbc_ws.store.labels() if r.task_ref and r.task_ref.startswith("ls:")]
    assert {r.labeler for r in recs} == {"ls:1"}
    assert len(recs) == 18
    # re-importing the same file replaces, not duplicates
    import_label_studio(bbc_ws, ls_dir / "text_classification_export.json")
    assert len([r for r in bbc_ws.store.labels() if r.task_ref and r.task_ref.startswith("ls:")]) == 18
    # data.import's relabel holds for labels coming back from Label Studio: "tech" read as "technology"
    cfg = bbc_ws.config()
    cfg.steps["data.import"]["relabel"] = {"tech": "technology"}
    cfg.save()
    out = import_label_studio(bbc_ws, ls_dir / "text_classification_export.json")
    assert out["relabeled"] == 1
    recs = [r.label for r in bbc_ws.store.labels() if r.task_ref and r.task_ref.startswith("ls:text_classification_export.json")]
    assert "technology" in recs and "tech" not in recs, recs


def test_cancelled_unannotated_and_disagreeing_tasks(unlabeled_ws, ls_dir, tmp_path):
    """Built from the real export's shape: a cancelled annotation, a task without annotations, and two
    annotators who disagree."""
    ws = unlabeled_ws
    export = tmp_path / "ls.json"
    export_label_studio(ws, export)
    tasks = json.loads(export.read_text())
    real = json.loads((ls_dir / "text_classification_export.json").read_text())[0]["annotations"][0]

    def ann(choice: str | None, who: int, cancelled: bool = False) -> dict:
        a = dict(real, completed_by=who, was_cancelled=cancelled)
        a["result"] = [] if choice is None else [dict(real["result"][0], value={"choices": [choice]})]
        return a

    tasks[0]["annotations"] = [ann(None, 1, cancelled=True)]
    tasks[1]["annotations"] = []
    tasks[2]["annotations"] = [ann("tech", 1), ann("sport", 2)]
    tasks[3]["annotations"] = [ann("politics", 1), ann("politics", 2)]
    export.write_text(json.dumps(tasks))
    out = import_label_studio(ws, export)
    assert out["skipped_tasks"] == 1 and out["conflicts"] == 1 and out["labeled_tasks"] == 2
    states = effective_labels(ws.store.labels())
    ids = [t["data"]["cdl_item"] for t in tasks[:4]]
    assert ids[0] not in states and ids[1] not in states
    assert states[ids[2]].conflict and states[ids[2]].label is None
    assert states[ids[3]].label == "politics"


def test_round_trip(bbc_ws, tmp_path):
    ws = bbc_ws
    q = LabelQueue(ws, "dave")
    row = ws.dataset().rows[5]
    q.set_label(row.uid, "politics")
    export = tmp_path / "export.json"
    export_label_studio(ws, export)
    tasks = json.loads(export.read_text())
    assert len(tasks) == 2127
    # the real exports' task and annotation shape
    t0 = tasks[0]
    assert {"id", "annotations", "drafts", "predictions", "data", "meta", "created_at", "updated_at"} <= set(t0)
    a0 = t0["annotations"][0]
    assert {"id", "completed_by", "result", "was_cancelled", "ground_truth", "created_at", "lead_time"} <= set(a0)
    assert a0["result"][0]["from_name"] == "category" and a0["result"][0]["to_name"] == "text"
    assert a0["result"][0]["type"] == "choices"
    # a fresh workspace with the same data gets the same effective labels back
    from runtime.workspace import Workspace

    before = effective_labels(ws.store.labels())
    other = Workspace.init(tmp_path / "other", "text-classification")
    add_source(other, make_bbc_subset(tmp_path / "x.zip", per_class=1000))  # the whole archive
    cfg = other.config()
    assert Runner(other).run(until="data.label").ok
    # drop the labels that came with the folders: only the Label Studio file speaks
    other.store.replace_labels("source:", [])
    with other.store.session() as s:
        from runtime.store.tables import SqlLabel

        s.query(SqlLabel).delete()
        s.commit()
    out = import_label_studio(other, export)
    assert out["unmatched"] == 0
    after = effective_labels(other.store.labels())
    assert {k: v.label for k, v in after.items()} == {k: v.label for k, v in before.items()}
    assert after[row.id].label == "politics"
    assert cfg.task == "text"
    other.close()


def test_unmatched_tasks_fail_the_whole_import(bbc_ws, tmp_path):
    export = tmp_path / "e.json"
    export.write_text(json.dumps([{"id": 1, "data": {"text": "no such article"}, "annotations": []}]))
    before = len(bbc_ws.store.labels())
    with pytest.raises(DataImportError, match="match no item"):
        import_label_studio(bbc_ws, export)
    assert len(bbc_ws.store.labels()) == before
    assert import_label_studio(bbc_ws, export, skip_unmatched=True)["unmatched"] == 1
    # the CLI says how many matched nothing (it said "0 label(s) from 1 task(s); 0 skipped", as if all were read)
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(bbc_ws.root), "labels", "import", str(export),
                          "--skip-unmatched"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "0 label(s) from 1 task(s)" in out.stdout and "1 matched no item here (--skip-unmatched)" in out.stdout


def test_label_studio_as_a_data_source(text_ws, ls_dir):
    add_source(text_ws, ls_dir / "text_classification_export.json")
    items = text_ws.store.items()
    assert len(items) == 9
    assert {i.source_label for i in items} == {"business", "entertainment", "politics", "sport", "tech"}


def test_image_export_without_images_names_the_task(image_ws, ls_dir):
    with pytest.raises(DataImportError, match="task 11.*fmnist_test_class9_0000.png.*--media-root"):
        add_source(image_ws, ls_dir / "image_classification_export.json")


def test_an_image_export_into_a_text_workspace_says_so(text_ws, ls_dir):
    """It said "task 11: no text in data.text", as if the export were broken."""
    with pytest.raises(DataImportError, match=re.escape(
            "task 11: holds an image (data.image), but this workspace is for text (its label config takes "
            "data.text); nothing was imported. Make an image workspace: `cdl init PATH --template "
            "image-classification`")):
        add_source(text_ws, ls_dir / "image_classification_export.json")
    assert text_ws.store.items() == []


def test_cli_refuses_a_label_that_is_not_a_class_unless_asked(unlabeled_ws):
    """`cdl labels set ITEM sportz` (a typo) used to make a sixth class of one item; a new class is now asked for."""
    from click.testing import CliRunner

    from runtime.cli import cli

    ws = unlabeled_ws
    q = LabelQueue(ws, "alice")
    q.set_label(q.next().uid, "tech")  # an unlabeled dataset's first labels make its classes
    second = q.next().uid

    def cdl(*args: str):  # noqa: ANN202
        return CliRunner().invoke(cli, ["-w", str(ws.root), "labels", "set", "--labeler", "bo", *args])

    out = cdl(second, "tehc")
    assert out.exit_code == 2, out.output
    assert "'tehc' is not one of the classes (tech): did you mean 'tech'? To start a new class" in out.output
    out = cdl(second, "weather")
    assert out.exit_code == 2 and "'weather' is not one of the classes (tech); to start a new class" in out.output
    assert [r.label for r in ws.store.labels() if r.labeler == "bo"] == []
    out = cdl(second, "sport", "--new-class")
    assert out.exit_code == 0, out.output
    out = cdl(second, "tech")
    assert out.exit_code == 0, out.output
    assert [r.label for r in ws.store.labels() if r.labeler == "bo"] == ["sport", "tech"]


def test_a_corrected_label_studio_file_imported_again_goes_into_the_next_version(bbc_ws, ls_dir, tmp_path):
    """A labeler fixes one annotation in Label Studio and the export is imported again. Its rows were the newest
    in the labels table, and SQLite gave the new rows the deleted rows' ids: the labels' revision did not
    change, data.ingest said "up to date" and the fix never reached a dataset version."""
    export = json.loads((ls_dir / "text_classification_export.json").read_text())
    import_label_studio(bbc_ws, ls_dir / "text_classification_export.json")
    assert Runner(bbc_ws).run(until="data.version").ok
    before = bbc_ws.current_version()
    task = export[0]
    choice = task["annotations"][0]["result"][0]["value"]["choices"]
    first = next(r for r in bbc_ws.store.labels() if r.task_ref and f"#{task['id']}/" in r.task_ref)
    assert next(r for r in bbc_ws.dataset().rows if r.id == first.item_id).label == choice[0]
    fixed = next(c for c in ("business", "tech") if c not in choice)
    task["annotations"][0]["result"][0]["value"]["choices"] = [fixed]
    corrected = tmp_path / "text_classification_export.json"  # the same file name: it replaces the first import
    corrected.write_text(json.dumps(export))
    import_label_studio(bbc_ws, corrected)
    states = {st.id: st for st in Runner(bbc_ws).statuses()}
    assert states["data.ingest"].status == "stale", states["data.ingest"]
    assert Runner(bbc_ws).run(until="data.version").ok
    assert bbc_ws.current_version() != before
    item = next(r for r in bbc_ws.store.labels() if r.task_ref and f"#{task['id']}/" in r.task_ref)
    row = next(r for r in bbc_ws.dataset().rows if r.id == item.item_id)
    # the corrected annotation now disagrees with the article's folder: a conflict in the new version, where
    # the first import agreed with it
    assert row.conflict and row.label is None, row


def test_agreement_between_labelers_and_with_the_imported_labels(small_bbc):
    """Two people label overlapping items, each disagreeing once; the folder names are a labeler too. Counts,
    shares and Cohen's kappa (checked against scikit-learn's) per labeler and per pair."""
    import subprocess
    import sys

    from sklearn.metrics import cohen_kappa_score

    from runtime.labeling import agreement

    ws = small_bbc
    rows = list({r.id: r for r in ws.dataset().rows if r.label}.values())[:10]
    truth = [r.label for r in rows]
    other = {"business": "tech", "tech": "sport", "sport": "politics", "politics": "business",
             "entertainment": "business"}
    anna, ben = LabelQueue(ws, "anna"), LabelQueue(ws, "ben")
    given = {"anna": {}, "ben": {}}
    for i in range(6):  # anna: items 0-5, wrong on 2
        label = other[truth[i]] if i == 2 else truth[i]
        anna.set_label(rows[i].uid, label)
        given["anna"][i] = label
    anna.set_label(rows[1].uid, other[truth[1]])  # a slip ...
    anna.undo()  # ... undone: her label of item 1 is the first one again
    for i in range(3, 9):  # ben: items 3-8, wrong on 4
        label = other[truth[i]] if i == 4 else truth[i]
        ben.set_label(rows[i].uid, label)
        given["ben"][i] = label
    ben.skip(rows[9].uid)
    doc = agreement(ws.store)
    by = {r["labeler"]: r for r in doc["labelers"]}
    src = next(n for n in by if n.startswith("import:"))
    assert [r["labeler"] for r in doc["labelers"]][:2] == ["anna", "ben"]  # people first
    assert (by["anna"]["labeled"], by["anna"]["skipped"], by["ben"]["labeled"], by["ben"]["skipped"]) == (6, 0, 6, 1)
    pairs = {(p["a"], p["b"]): p for p in doc["pairs"]}
    ab = pairs[("anna", "ben")]
    assert ab["items"] == 3 and ab["agreement"] == round(2 / 3, 4)  # items 3, 4, 5: ben is wrong on 4
    for who in ("anna", "ben"):
        p = pairs[(who, src)]
        mine = sorted(given[who].items())
        assert p["items"] == 6 and p["agreement"] == round(5 / 6, 4)
        want = cohen_kappa_score([lab for _, lab in mine], [truth[i] for i, _ in mine])
        assert p["kappa"] == pytest.approx(want, abs=1e-4)
    # anna: 5 of 6 with the folders, 2 of 3 with ben
    assert by["anna"]["shared"] == 9 and by["anna"]["agreement"] == round(7 / 9, 4)
    assert doc["items_with_several"] == 9 and doc["unanimous"] == round(7 / 9, 4)  # all but items 2 and 4
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "labels", "agreement"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "anna / ben: 3 shared item(s), 66.7% agree" in out.stdout
    # a spelling data.import's relabel merges agrees with the one it merges into
    odd = truth[0].upper()
    LabelQueue(ws, "cleo").set_label(rows[0].uid, odd)
    assert {(p["a"], p["b"]): p for p in agreement(ws.store)["pairs"]}[("cleo", src)]["agreement"] == 0.0
    cfg = ws.config()
    cfg.steps["data.import"]["relabel"] = {odd: truth[0]}
    cfg.save()
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "labels", "agreement", "--json"],
                         capture_output=True, text=True)
    assert {(p["a"], p["b"]): p for p in json.loads(out.stdout)["pairs"]}[("cleo", src)]["agreement"] == 1.0


def test_our_own_export_coming_back_adds_no_labeler_and_no_label(small_bbc, tmp_path):
    """`cdl labels export` then `cdl labels import` of that file (a backup, a round trip through a Label Studio
    project): every imported annotation came back as a second labeler, "ls:import:news.zip" beside
    "import:news.zip", agreeing with it on every item (kappa 1.0 out of nothing) and doubling the labels. Our
    annotations keep their labeler; one that says what its labeler says now is already here; a changed one is
    that labeler's new decision."""
    ws = small_bbc
    rows = ws.dataset().rows
    LabelQueue(ws, "vera").set_label(rows[0].uid, "tech" if rows[0].label != "tech" else "sport")
    LabelQueue(ws, "bo").skip(rows[1].uid)
    labelers = {r.labeler for r in ws.store.labels()}
    n = len(ws.store.labels())
    export_label_studio(ws, tmp_path / "ls.json")
    out = import_label_studio(ws, tmp_path / "ls.json")
    assert {r.labeler for r in ws.store.labels()} == labelers, labelers
    assert len(ws.store.labels()) == n and out["labels"] == 0 and out["already_here"] == n, out
    # vera changes her mind in the exported project: that comes back as her label, not a new labeler's
    tasks = json.loads((tmp_path / "ls.json").read_text())
    task = next(t for t in tasks if t["data"]["cdl_item"] == rows[0].id)
    ann = next(a for a in task["annotations"] if a["completed_by"] == "vera")
    ann["result"][0]["value"]["choices"] = ["politics"]
    (tmp_path / "ls.json").write_text(json.dumps(tasks))
    out = import_label_studio(ws, tmp_path / "ls.json")
    assert out["labels"] == 1 and {r.labeler for r in ws.store.labels()} == labelers
    assert effective_labels(ws.store.labels())[rows[0].id].label == "politics"


def _tree(xml: str):  # noqa: ANN202
    """A labeling config as (tag, attributes, children), the choices' order aside."""
    import xml.etree.ElementTree as ET

    def walk(e):  # noqa: ANN001, ANN202
        kids = sorted((walk(c) for c in e), key=repr)
        return e.tag, dict(e.attrib), kids
    return walk(ET.fromstring(xml))


def test_the_export_comes_with_the_label_studio_config_that_takes_it(small_bbc, ls_dir, tmp_path):
    """A Label Studio project needs a labeling config whose names and choices match the tasks before it imports
    them; the export came without one, so a user wrote it by hand. `--config` writes it: for the BBC workspace it is
    Label Studio's own (the one the shipped export was made with), and a label outside cdl.yaml's classes that the
    export carries is among its choices (Label Studio refuses an annotation whose choice its config lacks)."""
    from click.testing import CliRunner

    from runtime.cli import cli
    from runtime.labeling import label_config

    ws = small_bbc
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "labels", "export", str(tmp_path / "ls.json"), "--config",
                                 str(tmp_path / "ls.xml")])
    assert r.exit_code == 0 and "wrote the labeling config (5 classes) to" in r.stdout, r.output
    ours = (tmp_path / "ls.xml").read_text()
    assert _tree(ours) == _tree((ls_dir / "text_classification_label_config.xml").read_text()), ours
    # the image template's too, as Label Studio wrote it for the shipped Fashion-MNIST export
    shipped = (ls_dir / "image_classification_label_config.xml").read_text()
    import xml.etree.ElementTree as ET

    classes = [c.get("value") for c in ET.fromstring(shipped).iter("Choice")]
    assert _tree(label_config(False, "label", "image", classes)) == _tree(shipped)
    # a class the config does not fix, with characters XML must escape, given by a labeler
    cfg = ws.config()
    cfg.labeling["classes"] = ["business", "entertainment", "politics", "sport"]
    cfg.save()
    ws.store.add_label(ws.dataset().rows[0].id, 'R&D <"labs">', "kim", "manual", "label",
                       dataset_version=ws.current_version())
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "labels", "export", str(tmp_path / "ls2.json"), "--config",
                                 str(tmp_path / "ls2.xml"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["classes"] == ["business", "entertainment", "politics", "sport", 'R&D <"labs">',
                                               "tech"]
    choices = [c.get("value") for c in ET.fromstring((tmp_path / "ls2.xml").read_text()).iter("Choice")]
    used = {c for t in json.loads((tmp_path / "ls2.json").read_text()) for a in t["annotations"]
            for x in a["result"] for c in x["value"]["choices"]}
    assert used <= set(choices) and 'R&D <"labs">' in choices


def test_an_export_whose_choices_are_under_another_control_is_refused_by_name(text_ws, ls_dir, tmp_path):
    """A Label Studio project whose Choices is named "topic" gave "0 label(s) from 9 task(s); 9 unannotated" in a
    workspace whose labeling from_name is "category", as if nobody had labeled anything; as a data source its items
    came in without labels. Both are refused, naming the control and the setting that takes it."""
    tasks = json.loads((ls_dir / "text_classification_export.json").read_text())
    for t in tasks:
        for a in t["annotations"]:
            for r in a["result"]:
                r["from_name"] = "topic"
    topic = tmp_path / "topic.json"
    topic.write_text(json.dumps(tasks))
    says = (f"{topic}: its 9 choice(s) are all under the control 'topic', none under 'category' (cdl.yaml's "
            "labeling.from_name); nothing was imported. Set `labeling: {from_name: topic}` in cdl.yaml")
    with pytest.raises(DataImportError, match=re.escape(says)):
        add_source(text_ws, topic)
    assert text_ws.store.items() == []
    add_source(text_ws, ls_dir / "text_classification_export.json")
    assert Runner(text_ws).run(until="data.label").ok
    before = len(text_ws.store.labels())
    with pytest.raises(DataImportError, match=re.escape(says)):
        import_label_studio(text_ws, topic)
    assert len(text_ws.store.labels()) == before
    cfg = text_ws.config()
    cfg.labeling["from_name"] = "topic"
    cfg.save()
    assert import_label_studio(text_ws, topic)["labels"] == 9


def test_a_label_says_who_gave_it(unlabeled_ws):
    """`cdl labels set ITEM tech --labeler ""` was taken: a labeler "" in the agreement table, and " kim " and
    "kim" were two people."""
    from click.testing import CliRunner

    from runtime.cli import cli
    from runtime.domain.errors import CdlError

    ws = unlabeled_ws
    item = LabelQueue(ws, "x").next()
    for blank in ("", "  "):
        with pytest.raises(CdlError, match="a label needs the labeler's name"):
            LabelQueue(ws, blank).set_label(item.uid, "tech")
        with pytest.raises(CdlError, match="a label needs the labeler's name"):
            LabelQueue(ws, blank).skip(item.uid)
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "labels", "set", item.uid, "tech", "--labeler", ""])
    assert r.exit_code == 2 and "`--labeler NAME`" in r.stderr, r.output
    assert not [x for x in ws.store.labels() if x.source == "manual"]
    LabelQueue(ws, " kim ").set_label(item.uid, "tech")
    assert {x.labeler for x in ws.store.labels() if x.source == "manual"} == {"kim"}


def test_the_cli_labels_as_the_login_name_the_studio_takes(unlabeled_ws):
    """Without --labeler, the CLI took $USER and else "labeler", while the studio took the login name: under sudo
    -i, in a container or a CI job ($USER unset) one person labeled as "labeler" and as "root"."""
    import os
    import pwd
    import subprocess
    import sys

    ws = unlabeled_ws
    item = LabelQueue(ws, "x").next()
    env = {k: v for k, v in os.environ.items() if k not in ("USER", "LOGNAME", "LNAME", "USERNAME")}
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "labels", "set", item.uid, "tech"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert [x.labeler for x in ws.store.labels() if x.source == "manual"] == [pwd.getpwuid(os.getuid()).pw_name]


def _photos(folder, n: int = 6):  # noqa: ANN001, ANN202
    """A folder of photos with no class folder: imported unlabeled, for the labeling queue."""
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_a_label_studio_labeling_config_gives_the_classes(image_ws, ls_dir, tmp_path):
    """A team that labels in Label Studio has the project's labeling config, the classes in its order; the
    labeling panel offered no class before the first New class…, ten times over for Fashion-MNIST, and `labels
    import` took the XML for JSON ("malformed JSON at line 1 column 1"). `labels import CONFIG.xml` makes its choices
    cdl.yaml's labeling.classes and its names labeling.from_name and to_name, so the project's exports come in."""
    import subprocess
    import sys

    from runtime.api import add_source
    from runtime.labeling import LabelQueue, export_label_studio, import_label_config

    ws = image_ws
    add_source(ws, _photos(tmp_path / "photos"))
    config = ls_dir / "image_classification_label_config.xml"
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "labels", "import", str(config)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    fashion = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert f"10 classes, now this workspace's (cdl.yaml's labeling.classes, in this order): {', '.join(fashion)}" \
        in out.stdout
    lab = ws.config().labeling
    assert lab["classes"] == fashion and (lab["from_name"], lab["to_name"]) == ("label", "image")
    q = LabelQueue(ws, "ana")
    assert q.classes() == fashion
    item = q.rows("unlabeled")[0]
    q.set_label(item.uid, "Trouser")
    with pytest.raises(CdlError, match="not one of the classes in cdl.yaml"):
        q.set_label(item.uid, "Trousers")
    # `labels stats` says how far each class has got, in the config's order (it gave the totals alone)
    assert q.class_counts() == {c: int(c == "Trouser") for c in fashion}
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "labels", "stats"],
                         capture_output=True, text=True)
    assert out.stdout.splitlines() == ["total 6, labeled 1, conflicts 0, unlabeled 5",
                                       "by class: T-shirt/top 0, Trouser 1, Pullover 0, Dress 0, Coat 0, Sandal 0, "
                                       "Shirt 0, Sneaker 0, Bag 0, Ankle boot 0"], out
    # what we export for the project is the config it came with
    doc = export_label_studio(ws, tmp_path / "back.json", config=tmp_path / "back.xml")
    assert doc["classes"] == fashion
    assert (tmp_path / "back.xml").read_text().split() == config.read_text().split()
    # the same config again changes nothing
    before = (ws.root / "cdl.yaml").read_bytes()
    assert import_label_config(ws, config)["new"] == [c for c in fashion if c != "Trouser"]
    assert (ws.root / "cdl.yaml").read_bytes() == before


def test_a_labeling_config_that_does_not_fit_is_refused_and_changes_nothing(bbc_ws, ls_dir, tmp_path):
    from runtime.labeling import import_label_config

    ws = bbc_ws
    before = (ws.root / "cdl.yaml").read_bytes()
    text = (ls_dir / "text_classification_label_config.xml").read_text()
    # the shipped config of the BBC project fits the BBC workspace
    assert import_label_config(ws, ls_dir / "text_classification_label_config.xml")["classes"] == \
        ["business", "entertainment", "politics", "sport", "tech"]
    assert ws.config().labeling["from_name"] == "category"
    after = (ws.root / "cdl.yaml").read_bytes()
    # committed by itself, cdl.yaml having had no uncommitted change
    assert ws.git.clean("cdl.yaml") and ws.git._run("log", "-1", "--format=%s").stdout.strip() == \
        "labeling: the label config of text_classification_label_config.xml"

    def refused(xml: str, match: str) -> None:
        f = tmp_path / "c.xml"
        f.write_text(xml)
        with pytest.raises(DataImportError, match=match):
            import_label_config(ws, f)
        assert (ws.root / "cdl.yaml").read_bytes() == after

    refused(text.replace('<Choice value="tech"/>', ""), r"c\.xml: labels this workspace already uses are not among "
            r"its choices: 'tech' \(\d+ items\); add them")
    refused(text.replace("<Text", "<Image"), "labels an <Image>, but this is a text workspace")
    refused(text.replace('choice="single"', 'choice="multiple"'), "choice='multiple'")
    refused(text.replace("</View>", '<Choices name="mood" toName="text"><Choice value="a"/></Choices></View>'),
            r"2 <Choices> \('category', 'mood'\)")
    refused(text.replace('toName="text"', 'toName="body"'), "labels 'body', which is no <Text> or <Image>")
    refused(text.replace('<Choice value="sport"/>', '<Choice value="tech"/>'), "the choice 'tech' is there twice")
    refused("<View><Text name='text' value='$text'/></View>", "no <Choices> in this labeling config")
    refused("<View><Choices", r"c\.xml: not a Label Studio labeling config \(XML: ")
    assert before != after  # (the first import did write cdl.yaml)


def test_an_image_export_matches_the_photos_uploaded_to_label_studio_by_name(image_ws, ls_dir, tmp_path):
    """A user imports their photos, uploads the same files to Label Studio and labels them there: the export names
    each as "/data/upload/2/3b1a989e-fmnist_test_class9_0000.png" (Label Studio's prefix on the upload's name),
    which matched no item, so none of the labels could come back. The file's name, without the prefix, matches
    the item imported from the file so named, where one item alone has it."""
    import numpy as np
    from PIL import Image

    doc = json.loads((ls_dir / "image_classification_export.json").read_text())
    wanted = {t["data"]["image"].rsplit("/", 1)[1].split("-", 1)[1]: t["annotations"][0]["result"][0]["value"][
        "choices"][0] for t in doc}
    photos = tmp_path / "photos"
    photos.mkdir()
    for k, name in enumerate([*sorted(wanted), "extra.png"]):
        Image.fromarray(np.full((28, 28), 20 * k, np.uint8)).save(photos / name)
    add_source(image_ws, photos)  # no class folders: imported unlabeled
    got = import_label_studio(image_ws, ls_dir / "image_classification_export.json")
    assert got["labels"] == len(wanted) == 4 and got["unmatched"] == 0, got
    by_item = {i.id: i.source.rsplit("/", 1)[1] for i in image_ws.store.items()}
    labeled = {by_item[r.item_id]: r.label for r in image_ws.store.labels()}
    assert labeled == wanted, labeled
    # a name two items have is no match, and the refusal says why
    other = tmp_path / "more" / "x"
    other.mkdir(parents=True)
    Image.fromarray(np.full((28, 28), 7, np.uint8)).save(other / sorted(wanted)[0])
    add_source(image_ws, tmp_path / "more", {"unlabeled": True})
    with pytest.raises(DataImportError, match=r"1 task\(s\) match no item .* has the name of several items here"):
        import_label_studio(image_ws, ls_dir / "image_classification_export.json")
    # local storage's paths are matched by their end, so that cats/1.png and dogs/1.png are told apart
    pets = tmp_path / "pets"
    for cls, v in (("cats", 60), ("dogs", 90)):
        (pets / cls).mkdir(parents=True)
        Image.fromarray(np.full((28, 28), v, np.uint8)).save(pets / cls / "1.png")
    add_source(image_ws, pets, {"unlabeled": True})
    local = tmp_path / "local.json"
    local.write_text(json.dumps([{"id": 1, "data": {"image": "/data/local-files/?d=home/u/pets/dogs/1.png"},
                                  "annotations": [{"completed_by": 1, "result": [
                                      {"from_name": "label", "to_name": "image", "type": "choices",
                                       "value": {"choices": ["Dress"]}}]}]}]))
    assert import_label_studio(image_ws, local)["labels"] == 1
    (dog,) = [i for i in image_ws.store.items() if i.source.endswith("dogs/1.png")]
    assert [(r.item_id, r.label) for r in image_ws.store.labels() if r.task_ref.startswith("ls:local.json")] == [
        (dog.id, "Dress")]


def test_an_image_export_matches_by_content_through_label_studio_media_folder(image_ws, ls_dir, tmp_path):
    """Photos renamed on the way to Label Studio (or named alike in two folders) match by their content, read from
    the project's files: `labels import --media-root` takes Label Studio's media folder (upload/2/3b1a989e-x.png for
    "/data/upload/2/3b1a989e-x.png"), as `data import --media-root` does."""
    import numpy as np
    from PIL import Image

    doc = json.loads((ls_dir / "image_classification_export.json").read_text())
    photos, media = tmp_path / "photos", tmp_path / "media"
    photos.mkdir()
    wanted = {}
    for k, t in enumerate(doc):
        ref = t["data"]["image"]  # /data/upload/2/3b1a989e-fmnist_test_class9_0000.png
        (media / ref.removeprefix("/data/")).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((28, 28), 50 + 40 * k, np.uint8)).save(media / ref.removeprefix("/data/"))
        (photos / f"IMG_{k}.png").write_bytes((media / ref.removeprefix("/data/")).read_bytes())
        wanted[f"IMG_{k}.png"] = t["annotations"][0]["result"][0]["value"]["choices"][0]
    add_source(image_ws, photos)
    with pytest.raises(DataImportError, match="4 task"):  # no name in common, and no file to read
        import_label_studio(image_ws, ls_dir / "image_classification_export.json")
    got = import_label_studio(image_ws, ls_dir / "image_classification_export.json", media_root=media)
    assert got["labels"] == 4 and got["unmatched"] == 0, got
    by_item = {i.id: i.source.rsplit("/", 1)[1] for i in image_ws.store.items()}
    assert {by_item[r.item_id]: r.label for r in image_ws.store.labels()} == wanted


def test_labels_next_writes_an_image_item_to_look_at(image_ws, tmp_path):
    """`cdl labels next` showed an image item as "<image (28, 28)>": a labeler at a terminal could not see what to
    label. --save-image writes it as a PNG (whatever the item came from: a file, an idx row, a device's sample)."""
    import numpy as np
    from click.testing import CliRunner
    from PIL import Image

    from runtime.cli import cli

    flat = tmp_path / "snaps"
    flat.mkdir()
    for k in range(3):
        Image.fromarray(np.full((12, 16, 3), 60 * k, np.uint8)).save(flat / f"{k}.png")
    add_source(image_ws, flat)  # no class folders: to be labeled
    r = CliRunner().invoke(cli, ["-w", str(image_ws.root), "labels", "next", "--labeler", "ann"])
    assert r.exit_code == 0 and "<image 12x16x3: --save-image FILE.png writes it>" in r.output, r.output
    out = tmp_path / "look" / "next.png"
    r = CliRunner().invoke(cli, ["-w", str(image_ws.root), "labels", "next", "--labeler", "ann", "--save-image",
                                 str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["image"] == str(out) and doc["content"] == f"<image 12x16x3: written to {out}>"
    shown = np.asarray(Image.open(out))
    assert np.array_equal(shown, LabelQueue(image_ws, "ann").content(doc["uid"]))


def test_a_proposals_samples_labeled_in_label_studio_leave_its_queue(unlabeled_ws, tmp_path):
    """`cdl proposals list` said "65/65 labeled" after `cdl loop --labels FILE`, while `labels next --filter
    proposal:p1` (and the export of it) still handed out all 65: only labels given here counted there."""
    ws = unlabeled_ws
    uids = [r.uid for r in ws.dataset().rows][:3]
    ws.store.set_state("proposal:p9:items", uids)  # as deploy.maintain stages a proposal's samples
    view = ws.dataset()
    tasks = [{"id": k, "data": {"cdl_item": view.row(u).id, "text": "x"},
              "annotations": [{"completed_by": 1, "result": [{"from_name": "category", "to_name": "text",
                                                              "type": "choices", "value": {"choices": ["tech"]}}]}]}
             for k, u in enumerate(uids[:2], 1)]
    (tmp_path / "ls.json").write_text(json.dumps(tasks))
    assert import_label_studio(ws, tmp_path / "ls.json")["labels"] == 2
    q = LabelQueue(ws, "lena")
    assert [r.uid for r in q.rows("proposal:p9")] == uids[2:]
    assert q.next("proposal:p9").uid == uids[2]
    from runtime.proposals import proposal

    ws.store.set_state("proposal:p9", {"id": "p9", "status": "open"})
    assert proposal(ws, "p9")["labeled"] == 2  # the list and the queue agree


def test_an_image_that_does_not_decode_is_said_and_skipped_not_a_traceback(tmp_path):
    """A folder of photos to label, one of them a corrupt file: `cdl labels next` raised Pillow's traceback
    ("cannot identify image file <_io.BytesIO …>") and the annotation panel stayed on the error, so nobody could
    label the rest; `labels export` failed the same way. The item is said in words, it can be skipped, the export
    leaves it out and says so, and `labels suggest` gives the others their guesses."""
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    from runtime.workspace import Workspace

    src = tmp_path / "photos"
    src.mkdir()
    (src / "a_broken.png").write_bytes(b"not a png at all")
    for i in range(3):
        Image.fromarray(np.full((12, 12), 60 * i, np.uint8)).save(src / f"b{i}.png")
    ws = Workspace.init(tmp_path / "ws", "image-classification")
    add_source(ws, src, {"unlabeled": True})
    q = LabelQueue(ws, "ann")
    first = q.next()
    assert first.uid.endswith("a_broken.png")
    said = q.content(first.uid)
    assert isinstance(said, str) and "cannot be decoded as an image (no image format Pillow reads)" in said, said
    assert f"cdl labels skip {first.uid}" in said
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "labels", "next", "--labeler", "ann"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "cannot be decoded as an image" in out.stdout, out.stderr[-2000:]
    q.skip(first.uid)
    after = q.next()
    assert after.uid != first.uid and not isinstance(q.content(after.uid), str)
    doc = export_label_studio(ws, tmp_path / "tasks.json")
    assert doc["tasks"] == 3 and doc["left_out_undecodable"] == [first.uid]
    assert len(json.loads((tmp_path / "tasks.json").read_text())) == 3
    ws.close()


def test_suggestions_pass_over_an_image_that_does_not_decode(tmp_path):
    import numpy as np
    from PIL import Image

    from runtime.labeling import suggest
    from runtime.registry import review
    from runtime.workspace import Workspace

    labeled = tmp_path / "labeled"
    for cls, level in (("dark", 30), ("light", 220)):
        (labeled / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(np.full((10, 10), level + i, np.uint8)).save(labeled / cls / f"{i}.png")
    more = tmp_path / "more"
    more.mkdir()
    (more / "a_broken.png").write_bytes(b"\x89PNG but not really")
    for i, level in enumerate((5, 250)):  # unlike every labeled image (one content is one item)
        Image.fromarray(np.full((10, 10), level, np.uint8)).save(more / f"new{i}.png")
    ws = Workspace.init(tmp_path / "ws", "image-classification")
    add_source(ws, labeled)
    res = Runner(ws).run(until="model.evaluate", overrides={
        "model.tune": {"n_trials": 1, "max_epochs": 1},
        "model.train": {"framework": "torch", "template": "mlp", "epochs": 2, "use_tuned": False},
        "model.evaluate": {"threshold": 0.0}})
    assert res.ok, [o.error for o in res.steps]
    review(ws.store, "ws:1", True, "ok", "tester")
    add_source(ws, more, {"unlabeled": True})
    said: list[str] = []
    doc = suggest(ws, log=said.append)
    assert doc["items"] == 2 and doc["undecodable"] == 1, (doc, said)
    assert any("1 item(s) cannot be decoded as images: no suggestion for them" in m for m in said), said
    ws.close()


def test_stats_say_the_counts_are_of_contents(text_ws, tmp_path):
    """`labels stats` said "total 2143" where data.ingest said "2241 items", with no word on the 98 copies a label
    covers at once."""
    from click.testing import CliRunner

    from runtime.cli import cli

    rows = ["text,label"] + [f"{w} markets moved again today,{'ab'[i % 2]}" for i, w in
                             enumerate(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"])]
    rows += [rows[1], rows[2], "a text nobody labeled yet about the markets,"]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    add_source(text_ws, tmp_path / "t.csv")
    assert Runner(text_ws).run(until="data.label").ok
    r = CliRunner().invoke(cli, ["-w", str(text_ws.root), "labels", "stats"])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == ("total 7, labeled 6, conflicts 0, unlabeled 1 (contents: 9 items, 2 of them "
                                        "copies of another, which its label covers)"), r.stdout
    r = CliRunner().invoke(cli, ["-w", str(text_ws.root), "labels", "stats", "--json"])
    assert json.loads(r.stdout)["items"] == 9 and json.loads(r.stdout)["total"] == 7


def test_progress_follows_every_change_as_a_count_from_scratch_does(unlabeled_ws):
    """progress counts by the sets of labeled and conflicting items kept beside the cached states (updated for the
    items each new label row touches): after each label, skip, undo, conflicting import and its removal it must
    say what counting every row afresh says."""
    ws = unlabeled_ws

    def from_scratch() -> dict[str, int]:
        q = LabelQueue(ws, "x")
        ids = {r.id for r in q._counted_rows()}
        states = effective_labels(ws.store.labels())
        labeled = sum(1 for i in ids if i in states and states[i].label is not None)
        conflicts = sum(1 for i in ids if i in states and states[i].label is None and states[i].conflict)
        return {"total": len(ids), "labeled": labeled, "conflicts": conflicts,
                "unlabeled": len(ids) - labeled - conflicts}

    def check() -> dict[str, int]:
        got = LabelQueue(ws, "alice").progress()  # a new queue each time, as the panel makes
        assert got == from_scratch()
        return got

    q = LabelQueue(ws, "alice")
    first = check()
    items = [q.next() for _ in range(1)]
    q.set_label(items[0].uid, "sport")
    assert check()["labeled"] == first["labeled"] + 1
    other = q.next()
    q.skip(other.uid)
    check()
    third = q.next()
    q.set_label(third.uid, "tech")
    assert check()["labeled"] == first["labeled"] + 2
    q.undo()
    assert check()["labeled"] == first["labeled"] + 1
    # an imported file that labels one item two ways: a conflict; then the file's labels replaced by none
    ws.store.replace_labels("file:x", [{"item_id": other.item_id, "label": lab, "labeler": f"ls{n}",
                                        "task_ref": "file:x"} for n, lab in enumerate(("sport", "tech"))])
    assert check()["conflicts"] == first["conflicts"] + 1
    q.set_label(other.uid, "business")  # a person's label decides it
    assert check()["conflicts"] == first["conflicts"]
    ws.store.replace_labels("file:x", [])
    assert check()["labeled"] == first["labeled"] + 2


def test_the_label_studio_export_is_one_task_a_line_and_says_how_far_it_is(unlabeled_ws, tmp_path):
    """Written with json's C encoder, a task a line (indent=1 made json use its Python encoder: 20 of the 34 s of
    Fashion-MNIST's export), with progress for `cdl labels export` and the panel."""
    import subprocess
    import sys

    ws = unlabeled_ws
    q = LabelQueue(ws, "ann")
    q.set_label(q.next().uid, "sport")
    calls: list[tuple[int, int]] = []
    out = tmp_path / "ls.json"
    doc = export_label_studio(ws, out, progress=lambda d, t: calls.append((d, t)))
    text = out.read_text()
    tasks = json.loads(text)
    lines = text.splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == len(tasks) + 2 == doc["tasks"] + 2
    assert [json.loads(line.rstrip(",")) for line in lines[1:-1]] == tasks
    rows = len(ws.dataset().rows)
    assert calls == [(rows, rows)]
    assert sum(len(t["annotations"]) for t in tasks) == 1
    res = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "labels", "export",
                          str(tmp_path / "cli.json")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and f"exporting: {rows} of {rows} item(s)" in res.stderr, res.stderr
    assert len(json.loads((tmp_path / "cli.json").read_text())) == len(tasks)  # (their times differ)
    # and `cdl labels import` says how far it is too (an export of 70 000 images read for 10 s without a word)
    res = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "labels", "import",
                          str(tmp_path / "cli.json")], capture_output=True, text=True, timeout=120)
    n = len(tasks)
    assert res.returncode == 0 and f"importing: 0 of {n} task(s)\nimporting: {n} of {n} task(s)" in res.stderr, \
        res.stderr
    assert "1 already here" in res.stdout, res.stdout
