"""A workspace: a folder that is a git repository and a DVC repository, with cdl.yaml and `.cdl/`.

    my-project/
      cdl.yaml              the pipeline (steps, parameters, edges)
      data/dataset/         the current dataset (index + packs), tracked by DVC as data/dataset.dvc
      src/                  the user's own model code
      .cdl/registry.db      the registry (SQLite; CDL_DATABASE_URL moves it to PostgreSQL)
      .cdl/packs/           packs written by imports, before ingest lays them out under data/
      .cdl/artifacts/       content-addressed artifacts
"""

from __future__ import annotations

import shutil
from functools import cached_property
from pathlib import Path

from runtime.domain.errors import WorkspaceError
from runtime.store import Store
from runtime.workspace.artifacts import ArtifactStore
from runtime.workspace.config import (
    CONFIG_NAME,
    PipelineConfig,
    check_model_name,
    load_config,
    model_name_for,
    parse_config,
)
from runtime.workspace.dataset import INDEX_NAME, DatasetView
from runtime.workspace.dvc import Dvc
from runtime.workspace.git import Git

TEMPLATES = ("text-classification", "image-classification")
DATASET_DIR = "data/dataset"

_GITIGNORE = """\
# CDL Studio: the registry, packs and artifacts are local state, not source
/.cdl/
__pycache__/
"""


RESOURCES = Path(__file__).resolve().parents[2] / "resources"


def template_text(name: str) -> str:
    if name not in TEMPLATES:
        raise WorkspaceError(f"unknown template {name!r} (known: {', '.join(TEMPLATES)})")
    path = RESOURCES / "templates" / f"{name}.yaml"
    if not path.exists():
        raise WorkspaceError(f"template file {path} is missing from this installation")
    return path.read_text(encoding="utf-8")


# what `cdl init` writes into src/: the interface, where it said only "see README.md of CDL Studio"
SRC_README = """\
# Your own model code

Set `model.train.template: src:FILE.py` (or `src:FILE.py:FUNCTION`) in cdl.yaml, and write in src/FILE.py:

    def build_model(input_shape, num_classes, params):
        ...

- `input_shape`: one item's shape: `(features,)` for text (the vocabulary's size); `(height, width, channels)`
  for images, which a PyTorch model receives as N, C, H, W and a Keras model as N, H, W, C.
- `num_classes`: the number of classes; the model returns one logit per class (no softmax: training applies
  the loss to logits, and export adds the softmax).
- `params`: the hyperparameters (lr, batch_size, hidden, dropout, layers, ...), with model.tune's best values
  where model.train.use_tuned is on.
- Return a `torch.nn.Module` (framework torch) or a `tf_keras.Model` (framework keras).

For example (PyTorch, text):

    import torch

    def build_model(input_shape, num_classes, params):
        return torch.nn.Sequential(torch.nn.Linear(input_shape[0], params["hidden"]), torch.nn.ReLU(),
                                   torch.nn.Dropout(params["dropout"]),
                                   torch.nn.Linear(params["hidden"], num_classes))

It may import other files and package folders of src/ (`from layers import block` for src/layers.py). Editing any of them makes
model.tune and model.train stale, so the next `cdl run` trains again. A model version keeps the code it was
trained with (this file and those it imports), and loads with it after the files change.
"""


class Workspace:
    def __init__(self, root: Path, store: Store | None = None):
        self.root = Path(root).resolve()
        if not (self.root / CONFIG_NAME).exists():
            # a mistyped -w said "not a CDL workspace (no cdl.yaml)" of a folder that is not there at all
            what = "does not exist" if not self.root.exists() else f"not a CDL workspace (no {CONFIG_NAME})"
            raise WorkspaceError(
                f"{self.root}: {what}; create one with `cdl init PATH --template text-classification`"
            )
        self._store = store

    # -- creation -----------------------------------------------------------------------------------------

    @classmethod
    def init(cls, root: Path, template: str, name: str | None = None) -> Workspace:
        root = Path(root).resolve()
        if (root / CONFIG_NAME).exists():
            raise WorkspaceError(f"{root}: already a CDL workspace")
        text = template_text(template)
        cfg = parse_config(text, f"template {template}")
        cfg.name = check_model_name(name, "--name") if name is not None else model_name_for(root.name)
        root.mkdir(parents=True, exist_ok=True)
        created = []
        try:
            git = Git(root)
            if not (root / ".git").exists():
                git.init()
                created.append(root / ".git")
            if not (root / ".dvc").exists():
                Dvc(root).init()
                created.append(root / ".dvc")
            for d in ("data", "src", ".cdl/packs", ".cdl/artifacts"):
                (root / d).mkdir(parents=True, exist_ok=True)
            (root / "src" / "README.md").write_text(SRC_README)
            gi = root / ".gitignore"
            gi.write_text((gi.read_text() if gi.exists() else "") + _GITIGNORE)
            cfg.save(root / CONFIG_NAME)
            ws = cls(root)
            _ = ws.store  # creates the registry
            git.commit(f"cdl init ({template})", CONFIG_NAME, ".gitignore", ".dvc", ".dvcignore", "src")
            return ws
        except Exception:
            for p in created:
                shutil.rmtree(p, ignore_errors=True)
            (root / CONFIG_NAME).unlink(missing_ok=True)
            raise

    # -- parts --------------------------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store.for_workspace(self.root)
        return self._store

    def config(self) -> PipelineConfig:
        """cdl.yaml as it is on disk now (re-read on every call: the user may edit it)."""
        return load_config(self.root / CONFIG_NAME)

    def save_config(self, cfg: PipelineConfig, message: str) -> str | None:
        """Write cdl.yaml and commit it with MESSAGE when it had no uncommitted change before (so the commit holds
        this change alone): runs then record a clean tree, where every parameter the studio or `--save` changed
        left the code "dirty" in the registry. A cdl.yaml edited by hand and not committed is written and left
        uncommitted, as the hand edit was (the doctor names it). Returns the commit, or None."""
        clean = self.git.clean(CONFIG_NAME)
        cfg.save(self.root / CONFIG_NAME)
        if not clean:
            return None
        try:
            return self.git.commit_only(message, CONFIG_NAME)
        except WorkspaceError:  # git refusing (a hook, a lock) loses nothing: the file is written, only uncommitted
            return None

    @cached_property
    def git(self) -> Git:
        return Git(self.root)

    @cached_property
    def dvc(self) -> Dvc:
        return Dvc(self.root)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.root / ".cdl" / "artifacts")

    @property
    def packs_dir(self) -> Path:
        return self.root / ".cdl" / "packs"

    @property
    def dataset_dir(self) -> Path:
        return self.root / DATASET_DIR

    def has_dataset(self) -> bool:
        return (self.dataset_dir / INDEX_NAME).exists()

    def dataset(self) -> DatasetView:
        """The checked-out dataset (data/dataset)."""
        return DatasetView.open(self.dataset_dir)

    def current_version(self) -> str | None:
        """The dataset version data/dataset holds now (set by data.version and by checkout)."""
        return self.store.get_state("dataset_version")

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
