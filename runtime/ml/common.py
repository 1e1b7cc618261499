"""What both training backends share: configuration, the per-epoch callback contract, results, metrics."""

from __future__ import annotations

import importlib.util
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

    @classmethod
    def from_params(cls, template: str, params: dict[str, Any], workspace: Path | None = None) -> TrainConfig:
        keys = {"epochs", "lr", "batch_size", "hidden", "dropout", "weight_decay", "patience", "seed", "layers"}
        kw = {k: params[k] for k in keys if k in params and params[k] is not None}
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


def user_builder(template: str, workspace: Path | None) -> Callable[..., Any]:
    """'src:model.py' or 'src:model.py:build_model' -> the function in the workspace's src/ folder."""
    parts = template.split(":")
    if len(parts) not in (2, 3) or parts[0] != "src":
        raise ValueError(f"template {template!r}: expected one of {', '.join(TEMPLATES)} or src:FILE.py[:FUNCTION]")
    if workspace is None:
        raise ValueError(f"template {template!r} needs a workspace")
    path = Path(workspace) / "src" / parts[1]
    func = parts[2] if len(parts) == 3 else "build_model"
    if not path.exists():
        raise ValueError(f"template {template!r}: {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"cdl_user_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not hasattr(mod, func):
        raise ValueError(f"template {template!r}: {path.name} has no function {func}(input_shape, num_classes, params)")
    return getattr(mod, func)


def validation_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified 80/20 (by default) split of the training indices."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    counts = np.bincount(y)
    strat = y if len(counts) > 1 and counts[counts > 0].min() >= 2 else None
    tr, va = train_test_split(idx, test_size=fraction, random_state=seed, stratify=strat)
    return np.sort(tr), np.sort(va)


def evaluate_predictions(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    pred = probs.argmax(axis=1)
    labels = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(y_true, pred, labels=labels, zero_division=0)
    return {
        "test_accuracy": float(accuracy_score(y_true, pred)),
        "macro_f1": float(f1_score(y_true, pred, labels=labels, average="macro", zero_division=0)),
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
