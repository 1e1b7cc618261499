"""What both training backends share: configuration, the per-epoch callback contract, results, metrics."""

from __future__ import annotations

import importlib.util
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TEMPLATES = ("bbc-net", "mlp", "cnn")
FRAMEWORKS = ("torch", "keras")


def training_backend(framework: str):  # noqa: ANN201
    """The module that trains with `framework` (imported on first use: torch and TensorFlow load slowly)."""
    if framework == "torch":
        from runtime.ml import torch_backend

        return torch_backend
    if framework == "keras":
        from runtime.ml import keras_backend

        return keras_backend
    from runtime.domain.errors import ConfigError

    raise ConfigError(f"unknown framework {framework!r} (known: {', '.join(FRAMEWORKS)})")


class StopTraining(Exception):
    """Raised by an epoch callback to end training early (pruned trial, cancelled job)."""


# what a training run takes from its parameters (model.train's, a tuning trial's)
HYPERPARAMETERS = ("epochs", "lr", "batch_size", "hidden", "dropout", "weight_decay", "patience", "seed", "layers")
# what model.tune's search space may name: the tuner sets a trial's epochs (max_epochs) and patience (none) itself
TUNABLE = tuple(k for k in HYPERPARAMETERS if k not in ("epochs", "patience"))


@dataclass
class TrainConfig:
    template: str
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    hidden: int = 256
    dropout: float = 0.3
    weight_decay: float = 0.0
    patience: int = 3
    seed: int = 42
    layers: int = 2
    workspace: Path | None = None  # for templates from the workspace's src/
    init: dict[str, Any] | None = None  # start from these weights (model.train's init_from; see carry_weights)
    source: dict[str, Any] | None = None  # a src: template's code to train (user_source): a study's, else src/'s now

    @classmethod
    def from_params(cls, template: str, params: dict[str, Any], workspace: Path | None = None) -> TrainConfig:
        kw = {k: params[k] for k in HYPERPARAMETERS if k in params and params[k] is not None}
        for k in ("epochs", "batch_size", "hidden", "patience", "seed", "layers"):
            if k in kw:
                kw[k] = int(kw[k])
        for k in ("lr", "dropout", "weight_decay"):
            if k in kw:
                kw[k] = float(kw[k])
        return cls(template=template, workspace=workspace, **kw)

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, "batch_size": self.batch_size, "hidden": self.hidden, "dropout": self.dropout,
                "weight_decay": self.weight_decay, "epochs": self.epochs, "patience": self.patience,
                "seed": self.seed, "layers": self.layers}


EpochCallback = Callable[[int, dict[str, float]], None]


# -- warm start: model.train's init_from ----------------------------------------------------------------------


class WarmStartError(ValueError):
    """The weights named by init_from do not fit the model being trained."""


@dataclass
class WeightSlot:
    """One tensor of the model being trained, and its counterpart in the weights it starts from.
    term_axis: the axis that runs over the input vocabulary (the first dense layer of a text model);
    class_axis: the axis that runs over the classes (the output layer)."""

    name: str
    src: np.ndarray | None
    dst: np.ndarray
    term_axis: int | None = None
    class_axis: int | None = None


def _pairs(src: list[str] | dict[str, int] | None, dst: list[str] | dict[str, int] | None
           ) -> tuple[np.ndarray, np.ndarray] | None:
    """(dst indices, src indices) of the names both have: vocabularies (term -> column) or class lists."""
    if src is None or dst is None:
        return None
    s = src if isinstance(src, dict) else {c: i for i, c in enumerate(src)}
    d = dst if isinstance(dst, dict) else {c: i for i, c in enumerate(dst)}
    both = sorted(set(s) & set(d), key=lambda k: d[k])
    return np.array([d[k] for k in both], np.int64), np.array([s[k] for k in both], np.int64)


def warm_start_plan(init: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    """What init_from carries over, from names alone: terms of the vocabulary and classes."""
    out: dict[str, Any] = {"from": init["ref"]}
    terms = _pairs(init.get("vocabulary"), init.get("target_vocabulary"))
    if terms is not None:
        n = len(init["target_vocabulary"])
        out["terms"] = {"carried": len(terms[0]), "new": n - len(terms[0]), "total": n}
    if init.get("classes") is not None:
        src = list(init["classes"])
        out["classes"] = {"carried": [c for c in classes if c in src], "new": [c for c in classes if c not in src],
                          "dropped": [c for c in src if c not in classes]}
    return out


def carry_weights(slots: list[WeightSlot], init: dict[str, Any], classes: list[str]) -> list[np.ndarray]:
    """The starting value of every slot: the source tensor where shapes agree; where the vocabulary or the
    classes differ, the input layer's columns follow the terms (a term the source did not know starts at zero)
    and the output layer's rows follow the class names (a new class keeps its fresh initialisation). Any other
    mismatch is an error that names the tensors: a warm start that silently loads half a model is worse than none.
    """
    ref = init["ref"]
    terms = _pairs(init.get("vocabulary"), init.get("target_vocabulary"))
    src_classes = init.get("classes")
    cls = _pairs(src_classes, classes) if src_classes is not None and list(src_classes) != list(classes) else None
    out: list[np.ndarray] = []
    errors: list[str] = []
    for slot in slots:
        s, d = slot.src, slot.dst
        if s is None:
            errors.append(f"{slot.name} is not in {ref}")
            out.append(d)
            continue
        remap = {}
        if terms is not None and slot.term_axis is not None:
            remap[slot.term_axis] = terms
        if cls is not None and slot.class_axis is not None:
            remap[slot.class_axis] = cls
        if not remap:
            if s.shape != d.shape:
                errors.append(f"{slot.name} is {tuple(s.shape)} in {ref} and {tuple(d.shape)} here")
                out.append(d)
            else:
                out.append(s.astype(d.dtype, copy=True))
            continue
        if s.ndim != d.ndim or any(s.shape[a] != d.shape[a] for a in range(d.ndim) if a not in remap):
            errors.append(f"{slot.name} is {tuple(s.shape)} in {ref} and {tuple(d.shape)} here")
            out.append(d)
            continue
        result = np.zeros_like(d) if slot.term_axis in remap else d.copy()
        di = [np.arange(n) for n in d.shape]
        si = [np.arange(n) for n in s.shape]
        for axis, (dst_idx, src_idx) in remap.items():
            di[axis], si[axis] = dst_idx, src_idx
        result[np.ix_(*di)] = s[np.ix_(*si)]
        out.append(result)
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise WarmStartError(f"init_from {ref} does not fit this model: {'; '.join(errors[:3])}{more}")
    return out


@dataclass
class TrainResult:
    framework: str
    template: str
    history: list[dict[str, float]]
    best_epoch: int
    checkpoint: Path  # a file holding the best weights
    arch: dict[str, Any]  # what rebuilds the model: template, input shape, classes, hyperparameters
    device: str
    seconds: float
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> dict[str, float]:
        return self.history[self.best_epoch - 1] if self.history else {}


class EarlyStopping:
    def __init__(self, patience: int):
        self.patience = patience
        self.best_loss = float("inf")
        self.best_epoch = 0
        self.bad = 0

    def update(self, epoch: int, val_loss: float) -> tuple[bool, bool]:
        """(improved, stop)."""
        if val_loss < self.best_loss - 1e-4:
            self.best_loss, self.best_epoch, self.bad = val_loss, epoch, 0
            return True, False
        self.bad += 1
        return False, self.patience > 0 and self.bad >= self.patience


def user_source(template: str, workspace: Path | None) -> dict[str, Any] | None:
    """The code of a `src:FILE.py[:FUNCTION]` template as a checkpoint keeps it ({"file", "sha256", "text"}, and
    "modules": {name: text} for the src/ files and packages it imports, as `from layers import Block` imports
    src/layers.py and `from blocks.conv import Conv` src/blocks/conv.py, with "packages" naming the packages), so
    that a model version loads with the code it was trained with after src/ is edited (as MLflow keeps a model's
    code_paths); sha256 covers them all. None for the built-in templates and a file not there."""
    path = _user_path(template, workspace)
    if path is None or not path.is_file():
        return None
    import hashlib

    data = path.read_bytes()
    modules, packages = _imported_siblings(path)
    digest = hashlib.sha256(data)
    for name in sorted(modules):
        kind = b"package" if name in packages else b"module"
        digest.update(b"\0" + kind + b"\0" + name.encode() + b"\0" + modules[name].encode("utf-8"))
    out: dict[str, Any] = {"file": path.name, "sha256": digest.hexdigest(), "text": data.decode("utf-8")}
    if modules:
        out["modules"] = modules
    if packages:
        out["packages"] = sorted(packages)
    return out


def _imported_siblings(path: Path) -> tuple[dict[str, str], set[str]]:
    """({module name: text}, {package names}) of what src/FILE.py imports from src/ (`import layers`: layers.py;
    `from blocks import conv`: the package folder blocks/, every module in it), and what those import in turn."""
    import ast

    src = path.parent
    found: dict[str, str] = {}
    packages: set[str] = set()
    done: set[str] = set()
    todo = [path.read_bytes()]
    while todo:
        try:
            tree = ast.parse(todo.pop())
        except (SyntaxError, ValueError):
            continue  # loading it says where
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - done:
                done.add(top)
                f, d = src / f"{top}.py", src / top
                if f.is_file() and f != path:
                    files = {top: f}
                elif (d / "__init__.py").is_file():
                    files = {}
                    for g in sorted(d.rglob("*.py")):
                        if "__pycache__" in g.parts:
                            continue
                        parts = g.relative_to(src).with_suffix("").parts
                        if parts[-1] == "__init__":
                            parts = parts[:-1]
                            packages.add(".".join(parts))
                        files[".".join(parts)] = g
                else:
                    continue
                for name, g in files.items():
                    found[name] = g.read_text(encoding="utf-8")
                    todo.append(found[name].encode("utf-8"))
    return found, packages


class _KeptModules:
    """While it is entered, `import layers` gives the src/layers.py kept with a model (source["modules"]), not the
    file as it is now, nor another version's: the names are taken out of sys.modules before and after."""

    def __init__(self, modules: dict[str, str], packages: list[str] | None = None):
        self.modules = modules
        self.packages = set(packages or ())
        self._saved: dict[str, Any] = {}

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:  # noqa: ANN401
        if name not in self.modules:
            return None
        return importlib.util.spec_from_loader(name, self, origin=self._file(name), is_package=name in self.packages)

    def _file(self, name: str) -> str:
        return f"src/{name.replace('.', '/')}" + ("/__init__.py" if name in self.packages else ".py")

    def create_module(self, spec: Any) -> None:  # noqa: ANN401
        return None

    def exec_module(self, module: Any) -> None:  # noqa: ANN401
        module.__file__ = self._file(module.__name__)
        exec(compile(self.modules[module.__name__], module.__file__, "exec"), module.__dict__)  # noqa: S102

    def __enter__(self) -> _KeptModules:
        import sys

        self._saved = {n: sys.modules.pop(n) for n in self.modules if n in sys.modules}
        sys.meta_path.insert(0, self)
        return self

    def __exit__(self, *exc: object) -> None:
        import sys

        if self in sys.meta_path:
            sys.meta_path.remove(self)
        for n in self.modules:
            sys.modules.pop(n, None)
        sys.modules.update(self._saved)


def user_code_digest(template: str, workspace: Path | None) -> str:
    """What a step that trains `template` fingerprints of its code: "" for a built-in template, else the sha256 of
    src/FILE.py and the src/ files it imports (or that it is missing), so that editing them makes model.tune and
    model.train stale."""
    if not template.startswith("src:"):
        return ""
    src = user_source(template, workspace)
    return f"{template}:{src['sha256'] if src else 'missing'}"


def src_template(template: str) -> tuple[str, str] | None:
    """'src:net.py' -> ('net.py', 'build_model'); 'src:net.py:make' -> ('net.py', 'make'); None for a built-in
    template (or a src: one not of that form, which user_builder names)."""
    parts = template.split(":")
    if len(parts) not in (2, 3) or parts[0] != "src":
        return None
    return parts[1], parts[2] if len(parts) == 3 else "build_model"


def _user_path(template: str, workspace: Path | None) -> Path | None:
    named = src_template(template)
    return Path(workspace) / "src" / named[0] if named and workspace is not None else None


def _user_module(template: str, workspace: Path | None, source: dict[str, Any] | None) -> tuple[Any, str, str]:
    """(the module of a src: template, its function's name, how errors name the file): from `source` (what
    user_source kept when the model was trained) where given, else from the workspace's src/ now."""
    from runtime.domain.errors import UserCodeError

    named = src_template(template)
    if named is None:
        raise ValueError(f"template {template!r}: expected one of {', '.join(TEMPLATES)} or src:FILE.py[:FUNCTION]")
    file, func = named
    if source is not None:
        import types

        filename = f"src/{source['file']}"  # what tracebacks and UserCodeError name
        mod = types.ModuleType(f"cdl_user_{Path(source['file']).stem}")
        mod.__file__ = filename
        try:
            with _KeptModules(source.get("modules") or {}, source.get("packages")):
                exec(compile(source["text"], filename, "exec"), mod.__dict__)  # noqa: S102 - the user's own code
        except Exception as exc:  # noqa: BLE001
            raise UserCodeError(f"{template}: {filename} does not load: {type(exc).__name__}: {exc}", exc) from exc
        return mod, func, filename
    if workspace is None:
        raise ValueError(f"template {template!r} needs a workspace")
    path = Path(workspace) / "src" / file
    if not path.exists():
        raise ValueError(f"template {template!r}: {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"cdl_user_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:  # noqa: BLE001
        raise UserCodeError(f"{template}: src/{path.name} does not load: {type(exc).__name__}: {exc}", exc) from exc
    return mod, func, f"src/{path.name}"


def user_builder(template: str, workspace: Path | None, source: dict[str, Any] | None = None) -> Callable[..., Any]:
    """'src:model.py' or 'src:model.py:build_model' -> the function in the workspace's src/ folder; with `source`
    (what user_source kept when the model was trained), the function in that code instead of the file's now.
    Code that does not load (a syntax error, a failed import) raises UserCodeError, which says where."""
    from runtime.domain.errors import UserCodeError

    mod, func, where = _user_module(template, workspace, source)
    if not hasattr(mod, func):
        raise ValueError(f"template {template!r}: {where} has no function {func}(input_shape, num_classes, params)")
    builder = getattr(mod, func)
    kept = _KeptModules((source or {}).get("modules") or {}, (source or {}).get("packages"))

    def build(input_shape: tuple[int, ...], num_classes: int, params: dict[str, Any]) -> Any:  # noqa: ANN401
        try:
            with kept:  # an import inside build_model gets the kept code too
                return builder(input_shape, num_classes, params)
        except Exception as exc:  # noqa: BLE001
            raise UserCodeError(f"{template}: {func}(input_shape={tuple(input_shape)}, num_classes={num_classes}, "
                                f"params) failed: {type(exc).__name__}: {exc}", exc) from exc

    return build


def user_classes(arch: dict[str, Any] | None) -> dict[str, type]:
    """The classes a src: model's kept code defines or imports, by name ({} for a built-in template): what Keras
    needs to load a model with a layer of the user's own (custom_objects; it failed with "'str' object is not
    callable")."""
    source = (arch or {}).get("source")
    if not source:
        return {}
    import types

    mod, _, _ = _user_module(arch["template"], None, source)
    kept = source.get("modules") or {}
    out: dict[str, type] = {}
    for value in list(vars(mod).values()):
        if isinstance(value, type):
            out.setdefault(value.__name__, value)
        elif isinstance(value, types.ModuleType) and value.__name__ in kept:  # `import layers`: its classes too
            for v in vars(value).values():
                if isinstance(v, type):
                    out.setdefault(v.__name__, v)
    return out


def check_user_model(template: str, run: Callable[[], Any], batch_shape: tuple[int, ...], num_classes: int) -> None:
    """A src: model's first forward pass, on two training items, before training: a model that does not take
    the input or does not give one logit per class is named here (it failed inside training with "mat1 and mat2
    shapes cannot be multiplied" or the loss's "Target 4 is out of bounds"). `run` returns the output."""
    from runtime.domain.errors import UserCodeError

    try:
        out = run()
    except Exception as exc:  # noqa: BLE001
        raise UserCodeError(f"{template}: its model fails on a batch of shape {batch_shape}: "
                            f"{type(exc).__name__}: {exc}", exc) from exc
    shape = tuple(getattr(out, "shape", ()) or ())
    want = (batch_shape[0], num_classes)
    if shape != want:
        raise UserCodeError(f"{template}: its model gives outputs of shape {shape or type(out).__name__} for a batch "
                            f"of shape {batch_shape}; it must give one logit per class: {want}")


def validation_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified 80/20 (by default) split of the training indices."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    counts = np.bincount(y)
    if (counts > 0).sum() < 2 or len(y) < 2:  # scikit-learn said "the resulting train set will be empty"
        from runtime.domain.errors import CdlError

        raise CdlError(f"the training data has {len(y)} labeled item(s) of {(counts > 0).sum()} class(es): a "
                       "classifier needs items of two classes or more (label more, then run the data pipeline)")
    strat = y if len(counts) > 1 and counts[counts > 0].min() >= 2 else None
    size: float | int = fraction
    if strat is not None:
        # a stratified split needs one validation item and one training item of each class: scikit-learn said
        # "The test_size = 2 should be greater or equal to the number of classes = 3" for 9 items of 3 classes
        k, n_val = int((counts > 0).sum()), math.ceil(fraction * len(y))
        if n_val < k:
            size = k
        if len(y) - max(n_val, k) < k:
            strat, size = None, fraction
    tr, va = train_test_split(idx, test_size=size, random_state=seed, stratify=strat)
    return np.sort(tr), np.sort(va)


def evaluate_predictions(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, Any]:
    return evaluate_labels(y_true, probs.argmax(axis=1), classes)


def evaluate_labels(y_true: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix over `classes` (indices); a
    prediction of -1 (a class `classes` lacks) is wrong, and is in no column of the matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    labels = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(y_true, pred, labels=labels, zero_division=0)
    # macro-F1 over the classes the test split has or the model predicted, as scikit-learn's default: a class
    # with neither (no test item of it, never predicted) scored 0 and pulled the mean down (0.25 for a model
    # right on its one test item of four classes)
    seen = sorted({int(v) for v in y_true} | {int(v) for v in pred if 0 <= v < len(classes)})
    return {
        "test_accuracy": float(accuracy_score(y_true, pred)),
        "macro_f1": float(f1_score(y_true, pred, labels=seen, average="macro", zero_division=0)),
        "per_class": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                      for i, c in enumerate(classes)},
        "confusion_matrix": confusion_matrix(y_true, pred, labels=labels).tolist(),
        "classes": classes,
        "n": int(len(y_true)),
    }


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0


# TensorFlow's C++ start-up lines, written to file descriptor 2 whatever TF_CPP_MIN_LOG_LEVEL says (TensorFlow
# 2.21's absl logging): absl's pre-init warning, oneDNN's and the CUDA stub's notes, and on a machine without a GPU
# "E0000 … failed call to cuInit: INTERNAL: CUDA error", which read as an error in the middle of `cdl run`.
_TF_NOISE = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\)|I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ "
                       r"|[WE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \w*(cuda|cudart|gpu|cpu_feature_guard)\w*\.cc:")


def load_tensorflow():  # noqa: ANN201
    """TensorFlow, imported (and its devices looked at, which is when cuInit complains) with the start-up lines it
    writes to the terminal left out (_TF_NOISE); anything else written meanwhile passes through."""
    import os
    import sys
    import tempfile

    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tensorflow-model-optimization needs Keras 2 (tf_keras)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (a daemon's): nothing to keep clean
        import tensorflow as tf

        return tf
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not _TF_NOISE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
    return tf
