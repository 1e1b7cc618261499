"""Listings on a new workspace: an empty one says so, and what would fill it, on stderr (stdout stays empty for
scripts); a model name that is not there is an error, as everywhere else."""

from __future__ import annotations

import json

from click.testing import CliRunner

from runtime.cli import cli


def _cdl(ws, *args: str):  # noqa: ANN001, ANN202
    return CliRunner().invoke(cli, ["-w", str(ws.root), *args])


def test_empty_listings_say_what_would_fill_them(text_ws):
    expected = {
        ("models", "list"): "no model versions yet: model.register registers one",
        ("devices", "list"): "no devices enrolled: `cdl devices enroll NAME --address HOST:PORT`",
        ("data", "versions"): "no dataset versions yet: data.version makes one",
        ("data", "report"): "no dataset version yet, so no validation report",
        ("data", "remote", "list"): "no DVC remotes: `cdl data remote add NAME URL`",
        ("proposals", "list"): "no retrain proposals: deploy.maintain makes one when deploy.monitor finds drift",
        # these two printed nothing at all
        ("devices", "collect"): "no devices enrolled, so nothing to collect: `cdl devices enroll NAME",
        ("devices", "history"): "no deployments yet: `cdl deploy NAME:VERSION --device D` (or deploy.push) makes one",
    }
    for args, said in expected.items():
        r = _cdl(text_ws, *args)
        assert r.exit_code == 0, (args, r.output)
        assert r.stdout == "" and said in r.stderr, (args, r.stdout, r.stderr)
    # --json stays a document, with nothing on stderr
    r = _cdl(text_ws, "models", "list", "--json")
    assert json.loads(r.stdout) == {"models": []} and r.stderr == ""


def test_a_model_name_that_is_not_there_is_an_error(text_ws):
    text_ws.store.register_model("bbc", framework="torch", template="text-classification", dataset_version="v1",
                                 transform="t", metrics={"test_accuracy": 0.9})
    for args in (("models", "list", "--name", "bcc"), ("models", "history", "bcc")):
        r = _cdl(text_ws, *args)
        assert r.exit_code == 2 and "model 'bcc' does not exist (models: bbc)" in r.stderr, (args, r.output)
    r = _cdl(text_ws, "models", "list", "--name", "bbc")
    assert r.exit_code == 0 and r.stdout.startswith("bbc:1"), r.output


def test_a_version_without_variants_says_how_to_make_them(text_ws):
    """`cdl models variants` of a version deploy.compress never worked on printed its name alone, and `cdl package`
    or `cdl deploy` said "has no variant 'fp32' (built: none)"; both now say which version the variants are made
    for, and the command that makes this one's."""
    text_ws.store.register_model("bbc", framework="torch", template="text-classification", dataset_version="v1",
                                 transform="t", metrics={"test_accuracy": 0.9})
    hint = "bbc:1 has no variants: deploy.export and deploy.compress make them for the version deploy.export's"
    command = "`cdl run --until deploy.revise --set deploy.export.model=bbc:1`"
    r = _cdl(text_ws, "models", "variants", "bbc:1")
    assert r.exit_code == 0 and r.stdout == "bbc:1\n" and hint in r.stderr and command in r.stderr, r.output
    r = _cdl(text_ws, "package", "bbc:1", "-o", str(text_ws.root / "b.cdlb"))
    assert r.exit_code == 2 and hint in r.stderr and command in r.stderr, r.output
    assert not (text_ws.root / "b.cdlb").exists()
    # once some are built, a missing one is named beside those that are
    text_ws.store.put_variant("bbc", 1, "fp32")
    r = _cdl(text_ws, "package", "bbc:1:static_int8", "-o", str(text_ws.root / "b.cdlb"))
    assert r.exit_code == 2 and "bbc:1 has no variant 'static_int8' (built: fp32)" in r.stderr, r.output


def test_suggestions_without_a_champion_say_how_to_get_one(text_ws):
    """It said only "model ws has no version with alias 'champion'"."""
    text_ws.store.register_model("ws", framework="torch", template="text-classification", dataset_version="v1",
                                 transform="t", metrics={"test_accuracy": 0.9})
    r = _cdl(text_ws, "labels", "suggest")
    assert r.exit_code == 2, r.output
    assert "suggestions come from the champion; approve a version (`cdl models review ws:N --approve`, the review " \
        "panel) or name one (`--model ws:N`)" in r.stderr, r.stderr


def test_suggestions_for_nothing_say_why(text_ws, monkeypatch):
    """"fm:2 suggested labels for 0 item(s)" on a workspace with every item labeled, and nothing more."""
    import runtime.labeling

    monkeypatch.setattr(runtime.labeling, "suggest", lambda ws, ref, log=None: {
        "model": "ws:1", "items": 0, "by_class": {}})  # the CLI's own line, one layer: suggest() is tested on its own
    r = _cdl(text_ws, "labels", "suggest")
    assert r.exit_code == 0 and r.stdout.strip() == (
        "ws:1 suggested labels for 0 item(s) (no item is unlabeled or in conflict: suggestions are for those)"), r.output


def test_package_deploy_and_serve_take_an_alias(text_ws, tmp_path):
    """`cdl package bbc:champion` was refused ("expected NAME:VERSION[:VARIANT]"), though deploy.export, `models
    predict` and `models variants` take aliases: a script had to look the champion's number up first. An alias
    (NAME:ALIAS or NAME@ALIAS, and latest) names the version now; a misspelt one, or a variant in its place, is
    named."""
    for _ in range(2):
        text_ws.store.register_model("bbc", framework="torch", template="text-classification", dataset_version="v1",
                                     transform="t", metrics={"test_accuracy": 0.9})
    text_ws.store.set_alias("bbc", "champion", 1)
    text_ws.store.put_variant("bbc", 1, "fp32")
    from runtime.devices import enroll

    enroll(text_ws, "d1", "127.0.0.1:9", tmp_path / "d1")
    out = str(text_ws.root / "b.cdlb")
    # resolved: each fails for want of a built bundle, naming the version the alias stands for
    for ref, said in (("bbc:champion", "bbc:1:fp32 was not built"), ("bbc@champion:static_int8", "bbc:1 has no variant "
                      "'static_int8' (built: fp32)"), ("bbc:latest", "bbc:2 has no variants")):
        for args in (("package", ref, "-o", out), ("deploy", ref, "--all"), ("serve", ref)):
            r = _cdl(text_ws, *args)
            assert r.exit_code == 2 and said in r.stderr, (args, r.output)
    for ref, said in (
            ("bbc:champoin", "model bbc has no version with alias 'champoin' (did you mean 'champion'?); its aliases: "
                             "champion, latest"),
            ("bbc:static_int8", "its aliases: champion, latest; a variant comes third: bbc:champion:static_int8"),
            ("bcc:champion", "model 'bcc' does not exist (models: bbc)"),
            ("bbc:3", "model bbc has no version 3 (versions 1 to 2)"),
            ("bbc", "expected NAME:VERSION[:VARIANT], e.g. bbc:3:static_int8 or bbc:champion")):
        for args in (("package", ref, "-o", out), ("deploy", ref, "--all"), ("serve", ref)):
            r = _cdl(text_ws, *args)
            assert r.exit_code == 2 and said in r.stderr, (args, r.output)
    assert not (text_ws.root / "b.cdlb").exists()


def test_latest_and_misspelt_aliases_everywhere_a_version_is_named(text_ws):
    """`cdl package bbc:latest` worked, `cdl models predict bbc:latest` and `models variants` said "model bbc has no
    version with alias 'latest'"; and only package, deploy and serve named the alias a misspelt one was close to."""
    for _ in range(2):
        text_ws.store.register_model("bbc", framework="torch", template="text-classification", dataset_version="v1",
                                     transform="t", metrics={"test_accuracy": 0.9})
    text_ws.store.set_alias("bbc", "champion", 1)
    for ref in ("bbc:latest", "bbc@latest", "bbc"):
        assert text_ws.store.resolve_model(ref).version == 2, ref
    r = _cdl(text_ws, "models", "variants", "bbc:latest")
    assert r.exit_code == 0 and "bbc:2" in r.output, r.output
    for args in (("models", "variants", "bbc:champoin"), ("models", "predict", "bbc@champoin", "--text", "a b"),
                 ("models", "lineage", "bbc:champoin")):
        r = _cdl(text_ws, *args)
        assert r.exit_code == 2, (args, r.output)
        assert "model bbc has no version with alias 'champoin' (did you mean 'champion'?); its aliases: champion, " \
            "latest" in r.stderr, (args, r.stderr)
    # the alias alone, as deploy.export's model parameter takes it: the message shows how to name it here
    for args in (("models", "variants", "champion"), ("models", "predict", "champion", "--text", "a b")):
        r = _cdl(text_ws, *args)
        assert r.exit_code == 2 and "model 'champion' does not exist (models: bbc); an alias goes after its model's " \
            "name: bbc@champion" in r.stderr, (args, r.stderr)


def test_dataset_versions_line_up_and_say_how_many_are_unlabeled(text_ws, tmp_path):
    """A version made by labeling alone read the same as the one before it ("2238 items (test 448, train 1790)"
    twice), and the columns after the counts moved with their width."""
    from runtime.api import add_source
    from runtime.jobs import Runner
    from runtime.labeling import LabelQueue

    rows = ["text,label"] + [f"{w} shares and markets moved again today {w},{'ab'[i % 2]}" for i, w in
                             enumerate(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"])]
    rows += ["an article nobody labeled yet about the markets,", "another article nobody labeled about sport,"]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    add_source(text_ws, tmp_path / "t.csv")
    assert Runner(text_ws).run(until="data.version").ok
    q = LabelQueue(text_ws, "lena")
    q.set_label(q.next().uid, "a")
    assert Runner(text_ws).run(until="data.version").ok
    r = _cdl(text_ws, "data", "versions")
    assert r.exit_code == 0, r.output
    one, two = r.stdout.splitlines()
    assert one.startswith("  v1    10 items (") and one.split("items (")[1].split(")")[0].endswith("; 2 unlabeled")
    assert two.startswith("* v2    10 items (") and two.split("items (")[1].split(")")[0].endswith("; 1 unlabeled")
    assert one.index(" dvc ") == two.index(" dvc "), r.stdout


def test_a_reader_that_stops_early_is_no_error(text_ws):
    """`cdl … | head -1`: the reader closes the pipe before the listing is written. It printed "error: broken pipe"
    (exit 2); now it stops without a word, with SIGPIPE's status, as git does."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    cdl = Path(sys.executable).with_name("cdl")
    read, write = os.pipe()
    os.close(read)  # nobody reads: the first write fails with EPIPE
    try:
        proc = subprocess.run([str(cdl), "-w", str(text_ws.root), "status"], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(write)
    assert proc.returncode == 141 and proc.stderr == "", (proc.returncode, proc.stderr)


def test_every_command_and_option_says_what_it_is_for():
    """`cdl proposals --help` listed `list` with no word, and nine options (`--labeler`, `--reject`, `--by`, …) had
    none in their command's help."""
    import click

    missing = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
            return
        if not (cmd.help or "").strip():
            missing.append(" ".join(path))
        missing.extend(f"{' '.join(path)} {p.opts[0]}" for p in cmd.params
                       if isinstance(p, click.Option) and not p.hidden and not p.help
                       and p.name not in ("as_json", "help"))

    walk(cli, ["cdl"])
    assert missing == [], missing


def test_a_devices_uptime_reads_in_minutes_hours_and_days():
    """`cdl devices status` said "up 187342s"."""
    from runtime.devices import uptime_text

    assert [uptime_text(s) for s in (42.7, 2855, 18720, 187342, 86400)] == [
        "42 s", "47 min", "5 h 12 min", "2 days 4 h", "1 day 0 h"]


def test_listings_give_times_in_local_time_as_cdl_runs_does(text_ws, monkeypatch):
    """`models history`, `devices list` and `history` and `data versions` printed the registry's ISO text cut to 19
    characters, "2026-12-06T16:24:39" in UTC, beside `cdl runs`' local "2026-12-06 17:24:39"."""
    import re
    import time
    from datetime import UTC, datetime

    monkeypatch.setenv("TZ", "Europe/Zurich")
    time.tzset()
    try:
        mv = text_ws.store.register_model("bbc", framework="torch", template="text-classification",
                                          dataset_version="v1", transform="t", metrics={"test_accuracy": 0.9})
        text_ws.store.set_alias("bbc", "challenger", 1, "registered")
        r = _cdl(text_ws, "models", "history", "bbc")
        assert r.exit_code == 0, r.output
        since = re.search(r"v1\s+(\S+ \S+) -> now", r.stdout)
        assert since, r.stdout
        since_utc = datetime.fromisoformat(json.loads(_cdl(text_ws, "models", "history", "bbc", "--json").stdout)
                                           ["aliases"][0]["since"])
        since_utc = since_utc if since_utc.tzinfo else since_utc.replace(tzinfo=UTC)
        assert since.group(1) == since_utc.astimezone().strftime("%Y-%m-%d %H:%M:%S"), (r.stdout, since_utc)
        assert mv.version == 1
        assert datetime.now().astimezone().utcoffset().total_seconds() > 0  # Zurich is ahead of UTC: it shows
        assert "T" not in since.group(1)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_loop_without_devices_says_so_not_that_data_will_come(text_ws):
    """`cdl loop` on a workspace with no device said "no scoring data yet: nothing to do until more scoring data
    comes", and deploy.monitor "no scoring data yet": none comes without a device. Both say what to do."""
    from runtime.loop import run_loop

    res = run_loop(text_ws)
    assert res["status"] == "no-data" and res.code == 0, res
    assert res["reason"] == ("no devices enrolled, so no scoring data to check: enroll one (`cdl devices enroll NAME "
                          "--address HOST:PORT`) and deploy a model to it"), res["reason"]
    (mon,) = [s for s in res["steps"] if s["id"] == "deploy.monitor"]
    assert mon["message"] == res["reason"], mon
