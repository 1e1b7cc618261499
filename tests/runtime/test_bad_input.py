"""Bad input gets a clear error naming the file, and nothing is half-imported."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import pytest

from runtime.api import add_source
from runtime.domain.errors import DataImportError
from tests.conftest import make_bbc_subset


def _assert_untouched(ws, before_yaml: str) -> None:
    assert ws.store.item_count() == 0
    assert ws.store.labels() == []
    assert ws.config().params("data.import")["sources"] == []
    assert (ws.root / "cdl.yaml").read_text() == before_yaml
    assert Path(ws.root / ".cdl" / "packs").exists()


def _import_fails(ws, src: Path, match: str, **options) -> DataImportError:
    before = (ws.root / "cdl.yaml").read_text()
    with pytest.raises(DataImportError, match=match) as info:
        add_source(ws, src, options or None)
    assert str(src.name) in str(info.value)
    _assert_untouched(ws, before)
    return info.value


def test_source_that_does_not_exist(text_ws, tmp_path):
    _import_fails(text_ws, tmp_path / "nope.zip", "does not exist")


def test_corrupt_zip(text_ws, tmp_path):
    good = make_bbc_subset(tmp_path / "good.zip", per_class=3)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _import_fails(text_ws, bad, "not a valid zip")


def test_zip_with_a_member_failing_its_crc(text_ws, tmp_path):
    good = make_bbc_subset(tmp_path / "good.zip", per_class=2)
    data = bytearray(good.read_bytes())
    idx = data.find(b"Ad sales boost")  # inside the first member's stored bytes? compressed: flip a byte
    pos = 200 if idx < 0 else idx
    data[pos] ^= 0xFF
    bad = tmp_path / "crc.zip"
    bad.write_bytes(bytes(data))
    _import_fails(text_ws, bad, "corrupt zip")


def test_empty_file(text_ws, tmp_path):
    for name in ("empty.zip", "empty.csv", "empty.json"):
        p = tmp_path / name
        p.write_bytes(b"")
        _import_fails(text_ws, p, "empty")


def test_truncated_idx(image_ws, tmp_path, fashion_dir):
    folder = tmp_path / "fm"
    folder.mkdir()
    raw = gzip.decompress((fashion_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[: len(raw) - 5000], 1))
    shutil.copy(fashion_dir / "t10k-labels-idx1-ubyte.gz", folder)
    err = _import_fails(image_ws, folder, "truncated")
    assert "t10k-images-idx3-ubyte.gz" in str(err)


def test_truncated_gzip_stream(image_ws, tmp_path, fashion_dir):
    folder = tmp_path / "fm"
    folder.mkdir()
    data = (fashion_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    shutil.copy(fashion_dir / "t10k-images-idx3-ubyte.gz", folder)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(data[: len(data) // 2])
    _import_fails(image_ws, folder, "truncated or corrupt gzip")


def test_idx_without_labels_file(image_ws, tmp_path, fashion_dir):
    folder = tmp_path / "fm"
    folder.mkdir()
    shutil.copy(fashion_dir / "t10k-images-idx3-ubyte.gz", folder)
    _import_fails(image_ws, folder, "labels file")


def test_malformed_json(text_ws, tmp_path):
    p = tmp_path / "export.json"
    p.write_text('[{"id": 1, "data": {"text": "hello"}, "annotations": [}]')
    _import_fails(text_ws, p, "malformed JSON at line 1")


def test_json_that_is_not_a_task_list(text_ws, tmp_path):
    p = tmp_path / "export.json"
    p.write_text('{"hello": "world"}')
    _import_fails(text_ws, p, "list of Label Studio tasks")


def test_csv_without_label_column(text_ws, tmp_path):
    p = tmp_path / "news.csv"
    p.write_text("text,author\nA long enough article about markets,me\n")
    err = _import_fails(text_ws, p, "no label column")
    assert "text, author" in str(err)
    assert str(err).endswith("name it with --label-column, or import the items unlabeled, for the labeling queue, "
                             "with --unlabeled"), str(err)


def test_a_csv_of_texts_alone_is_imported_unlabeled(text_ws, tmp_path):
    """One column, the text: no label to look for. It was refused ("no label column ... name it with
    --label-column"), where a folder of files with no class folder is taken for the labeling queue."""
    from runtime.jobs import Runner
    from runtime.labeling import LabelQueue
    from runtime.steps.sources import read_source

    p = tmp_path / "to-label.csv"
    p.write_text("text\nA long enough article about markets and trade\nAnother one about a football final\n")
    batch = read_source(p)
    assert [it.label for it in batch.items] == [None, None]
    assert batch.notes == ["one column, 'text', and no label column: its texts are imported unlabeled, for the "
                           "labeling queue"]
    assert add_source(text_ws, p).ok
    assert Runner(text_ws).run(until="data.label").ok
    assert LabelQueue(text_ws, "lena").progress()["unlabeled"] == 2
    assert read_source(p, options={"unlabeled": True}).notes == []  # asked for: nothing to say


def test_csv_with_a_bad_row(text_ws, tmp_path):
    p = tmp_path / "news.csv"
    p.write_text("text,label\nfine article text here,tech\nbroken,row,extra\n")
    _import_fails(text_ws, p, "line 3")


def test_csv_import_works(text_ws, tmp_path):
    p = tmp_path / "news.csv"
    p.write_text('text,label\n"An article, with a comma",tech\nAnother article,sport\n')
    add_source(text_ws, p)
    items = text_ws.store.items()
    assert [i.source_label for i in items] == ["tech", "sport"]
    assert items[0].source == "news.csv#row2"


def test_csv_with_semicolons_or_tabs_is_read(text_ws, tmp_path):
    """A spreadsheet saved as CSV in a locale with decimal commas separates with semicolons: it failed with "no text
    column (columns: text;label)". The header's separator is used; commas inside a field stay text."""
    semi = tmp_path / "semi.csv"
    semi.write_text('text;label\n"An article; with a semicolon, and a comma";tech\nAnother article;sport\n')
    add_source(text_ws, semi)
    tabs = tmp_path / "tabs.csv"
    tabs.write_text("text\tlabel\nA third article, tab separated\tpolitics\n")
    add_source(text_ws, tabs)
    items = {i.source: i.source_label for i in text_ws.store.items()}
    assert items == {"semi.csv#row2": "tech", "semi.csv#row3": "sport", "tabs.csv#row2": "politics"}, items


def test_a_csv_that_is_not_utf8_names_its_line(text_ws, tmp_path):
    p = tmp_path / "latin1.csv"
    p.write_bytes("text,label\nfine article text,tech\nun café en ville,sport\n".encode("latin-1"))
    err = _import_fails(text_ws, p, "line 3: not UTF-8 text")
    assert "save it as UTF-8" in str(err)
    # the message names the encoding the bytes read as, and the option that reads them (there was none)
    assert "it reads as cp1252" in str(err) and "--encoding cp1252" in str(err), err
    _import_fails(text_ws, p, "unknown encoding 'cp125' \\(for example utf-8, cp1252", encoding="cp125")
    # the wrong encoding named: the header reads as one long run of other characters, cut short, and said
    wrong = _import_fails(text_ws, p, "no text column", encoding="cp037")  # EBCDIC: any byte decodes
    assert str(wrong).endswith("read as cp037: is that the file's encoding?") and len(str(wrong)) < 600, wrong
    excel = tmp_path / "excel.csv"  # Excel on Windows: cp1252, semicolons, CRLF
    excel.write_bytes("Text;Label\r\n\"Caf\u00e9 prices \u2013 Z\u00fcrich\";business\r\n".encode("cp1252"))
    add_source(text_ws, excel, {"encoding": "cp1252"})
    assert text_ws.config().params("data.import")["sources"][0]["encoding"] == "cp1252"  # the next run reads it so
    from click.testing import CliRunner

    from runtime.cli import cli

    res = CliRunner().invoke(cli, ["-w", str(text_ws.root), "data", "import", str(p), "--encoding", "latin-1"])
    assert res.exit_code == 0, res.output
    # a spreadsheet's "Unicode text" (UTF-16 with its byte order mark, tabs, CRLF) is read, where it was refused
    u16 = tmp_path / "unicode.txt.tsv"
    u16.write_bytes("text\tlabel\r\nun café en ville, été\tsport\r\n".encode("utf-16"))
    add_source(text_ws, u16)
    assert {i.source: i.source_label for i in text_ws.store.items()} == {
        "unicode.txt.tsv#row2": "sport", "excel.csv#row2": "business", "latin1.csv#row2": "tech",
        "latin1.csv#row3": "sport"}
    from runtime.jobs import Runner
    from runtime.labeling import LabelQueue

    assert Runner(text_ws).run(until="data.ingest").ok
    assert LabelQueue(text_ws, "ana").content("excel.csv:row2") == "Caf\u00e9 prices \u2013 Z\u00fcrich"
    assert LabelQueue(text_ws, "ana").content("latin1.csv:row3") == "un caf\u00e9 en ville"
    assert LabelQueue(text_ws, "ana").content("unicode.txt.tsv:row2") == "un café en ville, été"
    from runtime.workspace.dataset import decode_text  # and a UTF-16 text file in a folder source

    assert decode_text("été\r\n".encode("utf-16")) == ("été\n", ["decoded UTF-16 (byte order mark)",
                                                               "normalised CRLF line endings"])


def test_jsonl_import_and_its_bad_lines(text_ws, tmp_path):
    """JSON Lines as `datasets.Dataset.to_json` writes them (gzipped too): the first record names the fields,
    labels may be numbers, a `split` of train/test is kept; a bad line fails the whole file, naming the line."""
    import json

    from runtime.jobs import Runner

    rows = [{"text": f"An article about markets and trade, number {i}.", "label": i % 2, "id": i,
             **({"split": "test"} if i % 5 == 0 else {})} for i in range(20)]
    good = "\n".join(json.dumps(r) for r in rows) + "\n"
    for name, bad, match in (
            ("a.jsonl", good + '{"text": "cut off", "label": \n', "line 21: not valid JSON"),
            ("b.jsonl", good + '["not", "an", "object"]\n', "line 21: expected a JSON object"),
            ("c.jsonl", good + '{"text": 5, "label": 1}\n', "line 21: 'text' must be a string"),
            ("d.jsonl", good + '{"text": "x", "label": [1]}\n', "line 21: 'label' must be a string or a whole"),
            ("e.jsonl", good + '{"text": "x", "label": 1, "split": "validation"}\n',
             r"line 21: split must be train or test, got 'validation' \(model.train takes its validation split"),
            ("f.jsonl", '{"body2": "x", "y2": 1}\n', "line 1: no text field")):
        (tmp_path / name).write_text(bad)
        _import_fails(text_ws, tmp_path / name, match)
    p = tmp_path / "news.jsonl.gz"
    p.write_bytes(gzip.compress(good.encode()))
    add_source(text_ws, p)
    items = text_ws.store.items()
    assert len(items) == 20 and items[0].source == "news.jsonl.gz#line1"
    assert [i.source_label for i in items[:3]] == ["0", "1", "0"]
    assert assert_splits(items) == {"test": 4, None: 16}
    assert Runner(text_ws).run(until="data.split").ok
    test = {i.uid for i in text_ws.store.items(split="test")}
    assert {i.uid for i in items if i.source_split == "test"} <= test  # the file's own test rows stay there


def test_class_numbers_get_their_names(text_ws, tmp_path):
    """A Hugging Face dataset written with `to_json` or `to_csv` has class numbers for labels (AG News: 0-3):
    `--class-names World,Sports,Business,Sci/Tech` names them, as it does idx labels; they trained as "0"-"3"."""
    names = ["World", "Sports", "Business", "Sci/Tech"]
    csv = tmp_path / "ag.csv"
    csv.write_text("text,label\nA new chip doubles the speed of phones,3\nA number that is no class,4\n")
    _import_fails(text_ws, csv, r"ag.csv: line 3: label '4' is no class number 0-3 of the 4 class_names",
                  class_names=names)  # nothing imported
    jl = tmp_path / "ag.jsonl"
    jl.write_text('{"text": "Shares fell on the market in London today", "label": 2}\n'
                  '{"text": "The striker scored twice in the cup final", "label": 1}\n')
    add_source(text_ws, jl, {"class_names": names})
    csv.write_text("text,label\nA new chip doubles the speed of phones,3\n")
    add_source(text_ws, csv, {"class_names": names})
    assert sorted(i.source_label for i in text_ws.store.items()) == ["Business", "Sci/Tech", "Sports"]


def assert_splits(items) -> dict:  # noqa: ANN001
    out: dict = {}
    for i in items:
        out[i.source_split] = out.get(i.source_split, 0) + 1
    return out


def test_an_option_of_another_kind_of_source_is_refused(text_ws, tmp_path):
    """class_names (idx) on a folder of texts, or text_column (csv) on a zip, did nothing, without a word."""
    src = make_bbc_subset(tmp_path / "news.zip", per_class=2)
    _import_fails(text_ws, src, r"news.zip: the option 'class_names' is not for a text-folder source \(its options: "
                  r"unlabeled\); it is for idx, csv, jsonl", class_names="fashion-mnist")
    _import_fails(text_ws, src, r"the option 'text_column' is not for a text-folder source .*it is for csv, jsonl",
                  text_column="body")
    csv = tmp_path / "news.csv"
    csv.write_text("text,label\nThe striker scored twice in the final on Saturday,sport\n")
    _import_fails(text_ws, csv, r"news.csv: the option 'media_root' is not for a csv source \(its options: "
                  r"text_column, label_column, unlabeled, delimiter, class_names, encoding\); it is for label-studio", media_root=str(tmp_path))
    add_source(text_ws, src)  # and without it, imported
    # one written into cdl.yaml by hand, on a source already imported, is refused too (not "unchanged")
    from runtime.jobs import Runner

    cfg = text_ws.config()
    cfg.set_param("data.import", "sources", [{"path": str(src), "class_names": "mnist"}])
    cfg.save()
    with pytest.raises(DataImportError, match="the option 'class_names' is not for a text-folder source"):
        Runner(text_ws).run(steps=["data.import"])  # before the run starts anything, as the doctor says too
    from runtime.doctor import diagnose

    assert any("the option 'class_names' is not for a text-folder source" in c["detail"]
               for c in diagnose(text_ws)["checks"] if c["status"] == "fail")


def test_failed_reimport_keeps_previous_data(text_ws, tmp_path):
    src = make_bbc_subset(tmp_path / "news.zip", per_class=3)
    add_source(text_ws, src)
    n = text_ws.store.item_count()
    src.write_bytes(src.read_bytes()[:100])
    from runtime.jobs import Runner

    result = Runner(text_ws).run(steps=["data.import"])
    assert not result.ok and "news.zip" in result.steps[0].error
    assert text_ws.store.item_count() == n


def test_text_into_an_image_workspace_and_images_into_a_text_one(text_ws, tmp_path):
    """A source of the other kind was imported, and the workspace failed much later, in model.tune ("the cnn
    template needs images, got input shape (9789,)")."""
    from runtime.workspace import Workspace
    from tests.conftest import make_fashion_subset

    image_ws = Workspace.init(tmp_path / "images", "image-classification")

    err = _import_fails(image_ws, make_bbc_subset(tmp_path / "bbc.zip", per_class=2), "holds text items")
    assert "this workspace is for images (cdl.yaml: task: image)" in str(err)
    assert "--template text-classification" in str(err)
    fashion = make_fashion_subset(tmp_path / "fm", 20, 10)
    err = _import_fails(text_ws, fashion, "holds image items")
    assert "this workspace is for text (cdl.yaml: task: text)" in str(err)
    image_ws.close()


def test_cli_shows_a_one_line_error(tmp_path, text_ws):
    import subprocess
    import sys

    p = tmp_path / "news.csv"
    p.write_text("body,author\nx,y\n")
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(text_ws.root), "data", "import", str(p)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "news.csv" in proc.stderr and "Traceback" not in proc.stderr


def test_a_wrong_override_names_the_override_and_runs_nothing(tmp_path, text_ws):
    """`--set model.train.epochs=abc` is the user's input, not cdl.yaml's: the error says so, and nothing runs
    (it used to fail the step with an error that named cdl.yaml, where epochs was fine)."""
    import subprocess
    import sys

    for override, says in (("model.train.epochs=abc", "override model.train.epochs: expected int, got str 'abc'"),
                           ("model.train.epoks=3", "override model.train: unknown parameter 'epoks' for step "
                            "model.train (did you mean 'epochs'?)"),
                           ("model.trian.lr=0.1", "override for 'model.trian': not a step of this pipeline (did you "
                            "mean 'model.train'?)")):
        proc = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(text_ws.root), "run", "--set", override,
                               "--until", "model.train"], capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {says}"), proc.stderr
        assert "cdl.yaml" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(text_ws.root), "run", "--until",
                           "model.trian"], capture_output=True, text=True)
    assert proc.returncode == 2 and "step 'model.trian' is not in this pipeline (did you mean 'model.train'?)" \
        in proc.stderr, proc.stderr
    assert text_ws.store.last_step_runs() == {}  # not even data.import ran
    from runtime.domain.errors import ConfigError
    from runtime.params import set_step_params  # the Parameters dialog's and --save's way into cdl.yaml

    with pytest.raises(ConfigError, match=r"unknown parameter 'epoks' \(did you mean 'epochs'\?\)"):
        set_step_params(text_ws, "model.train", {"epoks": 3})


def test_a_monitor_window_of_0_is_refused(text_ws):
    """`cdl monitor --window 0` used to check the configured 500 records as if no window had been given."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(text_ws.root), "monitor", "--window", "0"],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "Invalid value for '--window': 0.0 is not in the range x>=1" in proc.stderr
    assert text_ws.store.last_step_runs() == {}


def test_enrolling_a_name_again_needs_replace(tmp_path, text_ws):
    """A second `cdl devices enroll edge1` used to replace the device silently: a new token, and the agent already
    running from the first folder refused the workspace from then on."""
    import subprocess
    import sys

    from runtime.devices import enroll

    first = enroll(text_ws, "edge1", "127.0.0.1:47000", tmp_path / "a")
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(text_ws.root), "devices", "enroll", "edge1",
                           "--address", "127.0.0.1:47001", "--out", str(tmp_path / "b")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "device 'edge1' is already enrolled (at 127.0.0.1:47000" in proc.stderr and "--replace" in proc.stderr
    assert not (tmp_path / "b").exists()
    assert text_ws.store.device("edge1").token == first["token"]
    again = enroll(text_ws, "edge1", "127.0.0.1:47001", tmp_path / "b", replace=True)
    d = text_ws.store.device("edge1")
    assert d.token == again["token"] != first["token"] and d.address == "127.0.0.1:47001"


def test_a_port_out_of_range_is_refused_by_enroll_and_by_the_agent(tmp_path, text_ws):
    """`cdl devices enroll e --address 127.0.0.1:99999` was recorded, and the agent started with that --listen
    listened on a random free port (gRPC's reading of a port out of range): nobody could find it."""
    import subprocess
    import sys

    from runtime.devices import enroll
    from runtime.domain.errors import CdlError

    for bad, says in (("127.0.0.1:99999", "from 0 to 65535"), ("127.0.0.1:80a", "from 0 to 65535"),
                      ("nonsense", "expected HOST:PORT"), (":8001", "expected HOST:PORT"),
                      # a URL was taken, its host being "http://10.0.0.7"
                      ("http://10.0.0.7:8001", "give HOST:PORT without a scheme"),
                      ("10.0.0.7/x:8001", "'10.0.0.7/x' is not a host name or address")):
        with pytest.raises(CdlError, match=says):
            enroll(text_ws, "edge1", bad, tmp_path / "dev")
        assert not (tmp_path / "dev").exists()
        proc = subprocess.run([sys.executable, "-m", "edge_agent.cli", "serve", "--data-dir", str(tmp_path / "any"),
                               "--listen", bad], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and f"--listen {bad!r}: " in proc.stderr and says in proc.stderr, proc.stderr
    assert text_ws.store.devices() == []
    enroll(text_ws, "edge1", "[::1]:8001", tmp_path / "dev")  # an IPv6 address in brackets is fine
    assert text_ws.store.device("edge1").address == "[::1]:8001"
    # a second device at the first one's address was enrolled: its pushes reached the first one's agent
    with pytest.raises(CdlError, match=re.escape("--address [::1]:8001: edge1 is enrolled there, and one agent "
                                                 "listens on a port; give edge2 another port, or remove edge1 first")):
        enroll(text_ws, "edge2", "[::1]:8001", tmp_path / "dev2")
    assert not (tmp_path / "dev2").exists() and [d.name for d in text_ws.store.devices()] == ["edge1"]
    enroll(text_ws, "edge1", "[::1]:8001", tmp_path / "dev", replace=True)  # itself, enrolled again: fine
    for n in (2, 3):  # port 0 (any free one, as tests and ad-hoc agents ask) is no one's
        enroll(text_ws, f"edge{n}", "127.0.0.1:0", tmp_path / f"dev{n}")


def test_an_agent_refuses_a_port_already_served_or_an_address_not_of_this_machine(tmp_path, text_ws, agent_factory):
    """gRPC binds with SO_REUSEPORT (an agent's workers share its port): a second agent started on a port an agent
    already served bound too, and the kernel split the connections between two agents serving different models.
    A port another program held, or an address not of this machine, ended in gRPC's traceback."""
    import socket
    import subprocess
    import sys

    from runtime.devices import enroll, probe_devices

    first = agent_factory(text_ws, "first")
    enroll(text_ws, "second", "127.0.0.1:0", tmp_path / "second")

    def serve(listen: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edge_agent.cli", "serve", "--data-dir", str(tmp_path / "second"),
                               "--listen", listen], capture_output=True, text=True, timeout=60)

    for listen in (first.address, f"0.0.0.0:{first.port}"):
        out = serve(listen)
        assert out.returncode == 2 and f"cannot listen on {listen}: the port is in use" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
    with socket.socket() as other:  # a program that is no agent
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        out = serve(f"127.0.0.1:{port}")
    assert out.returncode == 2 and "the port is in use" in out.stderr and "Traceback" not in out.stderr, out.stderr
    out = serve("192.0.2.7:8001")  # TEST-NET-1: no machine's own address
    assert out.returncode == 2 and "192.0.2.7 is not an address of this machine" in out.stderr, out.stderr
    assert probe_devices(text_ws, names=["first"])["first"]["error"] is None  # the first agent serves on
    # the REST port too, now that every worker binds it with SO_REUSEPORT: a second agent's is refused
    import json

    from tests.conftest import AgentProcess

    rest_dir = tmp_path / "rest"
    enroll(text_ws, "rest", "127.0.0.1:0", rest_dir)
    doc = json.loads((rest_dir / "agent.json").read_text())
    (rest_dir / "agent.json").write_text(json.dumps({**doc, "http_listen": "127.0.0.1:0"}))
    with_rest = AgentProcess(rest_dir, workers=2)
    with_rest.start()
    try:
        taken = with_rest.rest_url.split("//")[1].removesuffix("/v2")
        out = subprocess.run([sys.executable, "-m", "edge_agent.cli", "serve", "--data-dir", str(tmp_path / "second"),
                              "--listen", "127.0.0.1:0", "--http", taken, "--workers", "2"], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 2 and f"cannot serve HTTP on {taken}: the port is in use" in out.stderr, out.stderr
    finally:
        with_rest.stop()


def test_an_agent_on_a_damaged_folder_says_which_file_and_what_to_do(tmp_path, text_ws):
    """A TLS key that is no key ended in gRPC's C++ log lines and "cannot listen"; a journal that is no database in
    a traceback; an active.json that cannot be read served no model without a word."""
    import shutil
    import subprocess
    import sys

    from runtime.devices import enroll

    enroll(text_ws, "edge1", "127.0.0.1:0", tmp_path / "good")

    def serve(damage) -> subprocess.CompletedProcess:  # noqa: ANN001
        folder = tmp_path / "damaged"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(tmp_path / "good", folder)
        damage(folder)
        proc = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "serve", "--data-dir", str(folder), "--listen",
                                 "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:  # it serves: stop it and read what it said
            proc.terminate()
            out, err = proc.communicate(timeout=15)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    out = serve(lambda f: (f / "tls" / "server.key").write_text("not a key\n"))
    assert out.returncode == 2 and "server.key are not a certificate and its key" in out.stderr, out.stderr
    assert "--replace" in out.stderr and "Traceback" not in out.stderr
    out = serve(lambda f: (f / "journal.db").write_bytes(b"not a database, but long enough to be read as one" * 40))
    assert out.returncode == 2 and "journal.db: the scoring journal cannot be opened" in out.stderr, out.stderr
    assert "move it aside" in out.stderr and "Traceback" not in out.stderr
    out = serve(lambda f: (f / "active.json").write_text('{"current": "ab'))
    assert "active.json cannot be read" in out.stderr and "no model is active" in out.stderr, out.stderr
    assert "active model: none" in out.stdout


def test_a_damaged_registry_is_named_with_what_to_do(tmp_path):
    """A registry.db that is no database (a disk error, a file copied over it) gave SQLAlchemy's traceback."""
    import subprocess
    import sys

    from runtime.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws", "text-classification")
    ws.close()
    db = tmp_path / "ws" / ".cdl" / "registry.db"
    for extra in db.parent.glob("registry.db-*"):
        extra.unlink()
    db.write_bytes(b"this is not a database" * 100)
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(tmp_path / "ws"), "status"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"cannot open the registry database sqlite:///{db}: file is not a database" in out.stderr
    assert "restore the workspace from its last backup (`cdl restore ARCHIVE DEST`)" in out.stderr


def test_a_damaged_dataset_index_names_its_line(small_bbc):
    """data/dataset/index.jsonl with a line that is no row (an editor, a bad merge) gave json's traceback in every
    command that reads the dataset."""
    import subprocess
    import sys

    index = small_bbc.root / "data" / "dataset" / "index.jsonl"
    n = len(index.read_text().splitlines())
    with open(index, "ab") as fh:
        fh.write(b'{"uid": "half a row\n')
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(small_bbc.root), "labels", "stats"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"index.jsonl: line {n + 1}: not an index row" in out.stderr and "cdl data checkout" in out.stderr
    index.write_bytes(index.read_bytes().replace(b'{"uid": "half a row\n', b'\xff\n'))
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(small_bbc.root), "labels", "stats"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and f"line {n + 1}: not an index row ('utf-8' codec" in out.stderr, out.stderr


def test_rollback_of_an_unknown_device_is_an_input_error_and_leaves_no_history(tmp_path, text_ws):
    """`cdl rollback --device nope` wrote a failed rollback of 'nope' into the deployment history; a device that
    does not answer ended with exit 2 where `cdl deploy` gives 1."""
    import subprocess
    import sys

    from runtime.devices import enroll

    def rollback(name: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(text_ws.root), "rollback", "--device",
                               name], capture_output=True, text=True, timeout=120)

    out = rollback("nope")
    assert out.returncode == 2 and "'nope' is not enrolled" in out.stderr, out.stderr
    assert text_ws.store.deployments() == []
    enroll(text_ws, "gone", "127.0.0.1:9", tmp_path / "gone")
    out = rollback("gone")
    assert out.returncode == 1 and "device gone: rollback failed: UNAVAILABLE" in out.stderr, out.stderr
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(text_ws.root), "rollback", "--device", "gone",
                          "--json"], capture_output=True, text=True, timeout=120)
    doc = json.loads(out.stdout)
    assert out.returncode == 1 and (doc["device"], doc["ok"], doc["active"]) == ("gone", False, None), out.stdout
    assert "rollback failed: UNAVAILABLE" in doc["error"]
    assert [(d.device, d.action, d.status) for d in text_ws.store.deployments()] == [("gone", "rollback", "failed")] * 2


@pytest.mark.parametrize(("added", "said"), [
    ("trainig:\n  distributed: {nproc_per_node: 2}\n",
     "trainig: unknown setting (did you mean 'training'?); known: cdl, name, task, template, labeling, steps, edges, "
     "loops, training"),
    ("training:\n  distrbuted: {nproc_per_node: 2}\n", "training.distrbuted: unknown setting (did you mean "
     "'distributed'?)"),
])
def test_a_cdl_yaml_key_nothing_reads_is_named(text_ws, added, said):
    """A misspelt key (distributed training under "trainig:") was kept and ignored: training ran on one process,
    without a word. cdl.yaml is refused, naming it, by every command that reads it."""
    import subprocess
    import sys

    path = text_ws.root / "cdl.yaml"
    path.write_text(path.read_text() + added)
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(text_ws.root), "status"], capture_output=True,
                         text=True)
    assert out.returncode == 2 and f"cdl.yaml: {said}" in out.stderr, out.stderr


def test_a_misspelt_labeling_key_is_named(text_ws):
    from runtime.domain.errors import ConfigError
    from runtime.workspace.config import load_config

    path = text_ws.root / "cdl.yaml"
    path.write_text(path.read_text().replace("labeling:\n", "labeling:\n  clases: [a, b]\n", 1))
    with pytest.raises(ConfigError, match=r"labeling.clases: unknown setting \(did you mean 'classes'\?\)"):
        load_config(path)


def test_the_agents_own_ports_may_not_clash(tmp_path, text_ws):
    """`cdl devices enroll d --address 127.0.0.1:8001 --http 0.0.0.0:8001` was taken; the agent then failed on the
    device with "the port is in use (another agent, or another program ...)", the other program being itself.
    Enroll refuses it, and an agent.json edited so says it before anything binds."""
    import subprocess
    import sys

    from runtime.devices import enroll
    from runtime.domain.errors import CdlError

    for kw, says in (({"http_listen": "0.0.0.0:47011"}, "--http 0.0.0.0:47011: --address is on port 47011 too"),
                     ({"http_listen": "127.0.0.1:47012", "metrics_listen": "127.0.0.1:47012"},
                      "--metrics 127.0.0.1:47012: --http is on port 47012 too")):
        with pytest.raises(CdlError, match=re.escape(says + ", and the agent serves one thing a port")):
            enroll(text_ws, "edge1", "127.0.0.1:47011", tmp_path / "dev", **kw)
        assert not (tmp_path / "dev").exists() and text_ws.store.devices() == []
    # other hosts' same port, or port 0 twice, are no clash
    enroll(text_ws, "edge1", "127.0.0.1:47011", tmp_path / "dev", http_listen="127.0.0.1:0",
           metrics_listen="127.0.0.2:47011")
    doc = json.loads((tmp_path / "dev" / "agent.json").read_text())
    doc["metrics_listen"] = "0.0.0.0:47013"
    doc["http_listen"] = "127.0.0.1:47013"
    (tmp_path / "dev" / "agent.json").write_text(json.dumps(doc))
    out = subprocess.run([sys.executable, "-m", "edge_agent.cli", "serve", "--data-dir", str(tmp_path / "dev"),
                          "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--metrics (metrics_listen) 0.0.0.0:47013: --http (http_listen) is on port 47013 " \
        "too" in out.stderr, out.stderr


def test_source_columns_name_what_the_user_can_pick(tmp_path):
    """The data panel asks which column is the text and which the label where the import found none by name: the
    columns as the import reads them (a CSV's header in its encoding, JSON Lines' first record, Parquet's)."""
    import duckdb

    from runtime.steps.sources import source_columns

    (tmp_path / "a.csv").write_bytes("b\u00f6dy;topic\r\nsome text;x\r\n".encode("cp1252"))
    assert source_columns(tmp_path / "a.csv", {"encoding": "cp1252"}) == ["b\u00f6dy", "topic"]
    (tmp_path / "a.jsonl").write_text('\n{"body": "some text", "topic": "x", "n": 1}\n')
    assert source_columns(tmp_path / "a.jsonl") == ["body", "topic", "n"]
    duckdb.connect().execute(f"COPY (SELECT 'some text' AS body, 'x' AS topic) TO '{tmp_path / 'a.parquet'}'")
    assert source_columns(tmp_path / "a.parquet") == ["body", "topic"]
    (tmp_path / "folder" / "sport").mkdir(parents=True)
    (tmp_path / "folder" / "sport" / "1.txt").write_text("some text")
    assert source_columns(tmp_path / "folder") == []  # class folders have no columns


def test_yaml_that_does_not_parse_is_one_line_with_its_place(text_ws):
    """A hand-edited cdl.yaml that does not parse, and a `--set` value that does not: PyYAML's error came through
    over five lines naming "<unicode string>" (and `--set` raised its traceback, exit 1); each is one line now,
    with the line and column."""
    import subprocess
    import sys

    ws = text_ws
    root = ws.root
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(root), "run", "--set", "data.split.seed={x"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [
        "error: --set 'data.split.seed={x': the value is not valid YAML (line 1, column 3: expected ',' or '}', but "
        "got '<stream end>' (while parsing a flow mapping at line 1, column 1)); a text with braces, brackets or a "
        "colon goes in quotes: --set 'STEP.PARAM=\"...\"'"], out.stderr
    text = (root / "cdl.yaml").read_text()
    (root / "cdl.yaml").write_text(text.replace("  data.split:\n", "  data.split:\n   params: {bad\n", 1))
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(root), "status"], capture_output=True,
                         text=True)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert re.fullmatch(r"error: .*cdl\.yaml: not valid YAML at line \d+, column \d+: expected ',' or '}', but got "
                        r"':' \(while parsing a flow mapping at line \d+, column \d+\)", out.stderr.strip()), out.stderr


def test_an_output_path_that_cannot_be_written_is_one_line(packaged, tmp_path):
    """`cdl package … -o /no/such/dir/x.cdlb` (and `models report -o`, `labels export`, `devices enroll --out`,
    `cdl init` where no folder can be made) came through as os.mkdir's traceback: one line now, naming the path,
    exit 2, and the device is not enrolled."""
    import subprocess
    import sys

    ws = packaged
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    where = blocker / "sub"  # a folder below a file can be made by no one, root included
    for args in (["package", "ws:1", "-o", str(where / "x.cdlb")],
                 ["models", "report", "ws:1", "-o", str(where / "r.html")],
                 ["labels", "export", str(where / "l.json")],
                 ["devices", "enroll", "d9", "--address", "127.0.0.1:50999", "--out", str(where / "d9")]):
        out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), *args], capture_output=True,
                             text=True)
        assert out.returncode == 2 and "Traceback" not in out.stderr, (args, out.stderr[-1500:])
        (line,) = out.stderr.strip().splitlines()
        assert line.startswith(f"error: {blocker}") and line.endswith(": not a directory"), (args, line)
    assert "d9" not in subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "devices", "list"],
                                      capture_output=True, text=True).stdout
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "init", str(where / "ws"), "-t", "text-classification"],
                         capture_output=True,
                         text=True)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [f"error: {where / 'ws'}: not a directory"], out.stderr


def test_a_misspelt_class_names_preset_is_named_with_the_close_one(image_ws, tmp_path, fashion_dir):
    folder = tmp_path / "fm"
    folder.mkdir()
    for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(fashion_dir / f, folder)
    before = (image_ws.root / "cdl.yaml").read_text()
    with pytest.raises(DataImportError) as info:
        add_source(image_ws, folder, {"class_names": "fashion"})
    assert str(info.value) == ("class_names: unknown preset 'fashion' (did you mean 'fashion-mnist'?) (known: "
                               "fashion-mnist, mnist), or give a list"), info.value
    _assert_untouched(image_ws, before)


def test_exporting_the_champion_of_a_pipeline_that_has_none_says_how_to_get_one(text_ws):
    """deploy.export's default model is the champion: without one the step names the review that makes one."""
    from runtime.jobs import Runner

    name = text_ws.config().name
    res = Runner(text_ws).run(steps=["deploy.export"])
    assert not res.ok
    state = {s.id: s for s in Runner(text_ws).statuses()}["deploy.export"]
    assert state.reason == (f"model {name} has no champion yet: review a version (`cdl models review "
                            f"{name}:N --approve`) or set deploy.export.model"), state.reason


def test_a_workspace_folder_that_is_not_there_is_said_so(tmp_path):
    """A mistyped `-w` said "not a CDL workspace (no cdl.yaml)" of a folder that does not exist."""
    from runtime.domain.errors import WorkspaceError
    from runtime.workspace import Workspace

    with pytest.raises(WorkspaceError, match=re.escape(f"{tmp_path / 'nowhere'}: does not exist; create one with "
                                                       "`cdl init PATH --template text-classification`")):
        Workspace(tmp_path / "nowhere")
    with pytest.raises(WorkspaceError, match=re.escape(f"{tmp_path}: not a CDL workspace (no cdl.yaml); create")):
        Workspace(tmp_path)
