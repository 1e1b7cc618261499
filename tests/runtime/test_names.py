"""Names that end up in folders, commands, refs and REST paths: devices, workspaces, models."""

from __future__ import annotations

import shlex

import pytest

from runtime.devices import enroll
from runtime.domain.errors import CdlError


@pytest.mark.parametrize("name", ["..", ".", "a b", "", "-x", "dev/1", "x" * 65])
def test_a_name_that_is_no_folder_name_is_refused(text_ws, name):
    """'..' passed the old check ('/' alone) and wrote the device's agent.json and TLS key into .cdl/ itself."""
    with pytest.raises(CdlError, match="bad device name .*: letters, digits, '.', '_' and '-'"):
        enroll(text_ws, name, "127.0.0.1:9000")
    assert not (text_ws.root / ".cdl" / "agent.json").exists()
    assert text_ws.store.devices() == []


def test_the_start_command_is_one_a_shell_runs(text_ws, tmp_path):
    """A folder with a space printed `cdl-edge serve --data-dir /x/my devices/d1`, which a shell splits."""
    out = tmp_path / "my devices" / "edge-1.lab_2"
    doc = enroll(text_ws, "edge-1.lab_2", "127.0.0.1:9000", out)
    argv = shlex.split(doc["start"])
    assert argv == ["cdl-edge", "serve", "--data-dir", str(out)]  # agent.json's listen says where


def test_a_workspace_folder_name_that_cannot_name_a_model(tmp_path):
    """The model takes the workspace's name, which took the folder's: "my project:v2" made a model whose refs
    ("my project:v2:1") did not parse and whose REST path had a space. The default name is made fit; a --name or
    model.register.name that is not is refused."""
    from runtime.domain.errors import ConfigError
    from runtime.jobs import Runner
    from runtime.workspace import Workspace

    ws = Workspace.init(tmp_path / "my project:v2", "text-classification")
    try:
        assert ws.config().name == "my-project-v2"
        cfg = ws.config()
        cfg.steps["model.register"]["name"] = "news model"
        cfg.save()
        with pytest.raises(ConfigError, match="model.register.name: 'news model' cannot name a model"):
            Runner(ws).run(until="model.register")
        assert ws.store.last_step_runs() == {}
    finally:
        ws.close()
    with pytest.raises(ConfigError, match="--name: 'a/b' cannot name a model"):
        Workspace.init(tmp_path / "other", "text-classification", name="a/b")
    assert not (tmp_path / "other").exists()


def test_accented_letters_in_a_folder_name_keep_their_base_letter():
    """"my wörk space" named its model "my-w-rk-space": a letter with an accent was dropped as a character that
    cannot name a model. It keeps its base letter; what has none (a CJK folder name) still falls back."""
    from runtime.workspace.config import model_name_for

    assert model_name_for("my wörk space") == "my-work-space"
    assert model_name_for("Zürich Nachrichten: 2025") == "Zurich-Nachrichten-2025"
    assert model_name_for("café crème") == "cafe-creme"
    assert model_name_for("ﬁnance") == "finance"  # a ligature, decomposed
    assert model_name_for("新闻") == "workspace"
    assert model_name_for("新闻 news") == "news"


def test_init_says_the_model_name_and_what_comes_next(tmp_path):
    """`cdl init` said only "created PATH": not the model name it made of the folder's, nor the next command."""
    from click.testing import CliRunner

    from runtime.cli import cli

    r = CliRunner().invoke(cli, ["init", str(tmp_path / "my news"), "-t", "text-classification"])
    assert r.exit_code == 0, r.output
    assert r.stdout == f"created {tmp_path / 'my news'} from template text-classification (model name my-news)\n"
    assert f"next: `cdl -w '{tmp_path / 'my news'}' data import SOURCE` (news.zip" in r.stderr, r.stderr
    assert f"a model of your own: '{tmp_path / 'my news' / 'src' / 'README.md'}' says how" in r.stderr, r.stderr
    r = CliRunner().invoke(cli, ["init", str(tmp_path / "fm"), "-t", "image-classification"])
    assert "idx .gz files with --class-names fashion-mnist), then `cdl -w" in r.stderr, r.stderr
    assert "note:" not in r.stderr  # tmp_path is in no git repository


def test_init_in_a_folder_that_holds_files_says_what_becomes_of_them(tmp_path):
    """`cdl init` in a folder of photos kept them without a word: they are not the workspace's data until imported,
    nor in its commits."""
    from click.testing import CliRunner

    from runtime.cli import cli

    (tmp_path / "fm" / "photos").mkdir(parents=True)
    (tmp_path / "fm" / "notes.txt").write_text("mine")
    r = CliRunner().invoke(cli, ["init", str(tmp_path / "fm"), "-t", "image-classification"])
    assert r.exit_code == 0, r.output
    assert ("note: the folder already held notes.txt, photos/: they stay as they were, neither data of the workspace "
            f"nor in its git commits; to use photos/ as data: `cdl -w {tmp_path / 'fm'} data import "
            f"{tmp_path / 'fm' / 'photos'}`") in r.stderr, r.stderr
    assert (tmp_path / "fm" / "notes.txt").read_text() == "mine"
    r = CliRunner().invoke(cli, ["init", str(tmp_path / "empty"), "-t", "image-classification"])
    assert "already held" not in r.stderr


def test_init_inside_another_git_repository_says_so(tmp_path):
    """A workspace made in a monorepo's folder is a git repository of its own: `git add` in the outer one took it
    as an embedded repository, without a word from `cdl init`."""
    import subprocess

    from click.testing import CliRunner

    from runtime.cli import cli

    subprocess.run(["git", "init", "-q", str(tmp_path / "mono")], check=True)
    r = CliRunner().invoke(cli, ["init", str(tmp_path / "mono" / "ml" / "news"), "-t", "text-classification"])
    assert r.exit_code == 0, r.output
    assert (f"note: {tmp_path / 'mono' / 'ml' / 'news'} is inside the git repository {tmp_path / 'mono'}, and is a "
            "git repository of its own") in r.stderr, r.stderr
    assert f"add ml/news/ to {tmp_path / 'mono'}'s .gitignore" in r.stderr
