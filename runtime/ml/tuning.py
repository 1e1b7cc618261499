"""Hyperparameter search with Optuna: TPE (or random) sampling, ASHA or Hyperband pruning fed per epoch.

The study lives in the registry database through Optuna's RDB storage, so `optuna.load_study(study_name=...,
storage=...)` and optuna-dashboard open it, and tuning workers on several machines can share it when the
registry is on PostgreSQL.
"""

from __future__ import annotations

import logging
from typing import Any

from runtime.domain.errors import ConfigError
from runtime.store import Store

DEFAULT_SPACE: dict[str, Any] = {
    # like the thesis' Determined adaptive.yaml
    "lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
    "batch_size": {"type": "categorical", "choices": [16, 32, 64, 128]},
    "hidden": {"type": "int", "low": 64, "high": 512, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
}


def storage_url(store: Store) -> tuple[str, dict[str, Any]]:
    url = store.url
    kwargs: dict[str, Any] = {}
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if store.schema:
        kwargs["connect_args"] = {"options": f"-csearch_path={store.schema}"}
    elif url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}
    return url, kwargs


def storage(store: Store):  # noqa: ANN201
    import optuna

    url, kwargs = storage_url(store)
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def check_space(space: dict[str, Any], where: str) -> None:
    for name, d in space.items():
        if not isinstance(d, dict) or d.get("type") not in ("float", "int", "categorical"):
            raise ConfigError(f"{where}.{name}: expected {{type: float|int|categorical, ...}}")
        if d["type"] == "categorical":
            if not d.get("choices"):
                raise ConfigError(f"{where}.{name}: categorical needs choices")
        else:
            if "low" not in d or "high" not in d or d["low"] >= d["high"]:
                raise ConfigError(f"{where}.{name}: needs low < high")


def suggest(trial, space: dict[str, Any]) -> dict[str, Any]:  # noqa: ANN001
    out = {}
    for name, d in space.items():
        if d["type"] == "float":
            out[name] = trial.suggest_float(name, float(d["low"]), float(d["high"]), log=bool(d.get("log")))
        elif d["type"] == "int":
            out[name] = trial.suggest_int(name, int(d["low"]), int(d["high"]), log=bool(d.get("log")))
        else:
            out[name] = trial.suggest_categorical(name, list(d["choices"]))
    return out


def make_sampler(kind: str, seed: int):  # noqa: ANN201
    import optuna

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)


def make_pruner(kind: str, min_epochs: int, max_epochs: int, reduction_factor: int):  # noqa: ANN201
    import optuna

    if kind == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_epochs, reduction_factor=reduction_factor)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_epochs, max_resource=max_epochs,
                                              reduction_factor=reduction_factor)
    return optuna.pruners.NopPruner()


def quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
