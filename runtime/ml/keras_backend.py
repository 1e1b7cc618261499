"""Keras templates and training (Keras 2 through tf_keras, as tensorflow-model-optimization needs).

TF_USE_LEGACY_KERAS=1 is set before TensorFlow loads; jobs that use Keras run in their own worker process.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from runtime.domain.errors import first_line  # noqa: E402
from runtime.ml.common import (  # noqa: E402
    EarlyStopping,
    EpochCallback,
    StopTraining,
    TrainConfig,
    TrainResult,
    WarmStartError,
    WeightSlot,
    carry_weights,
    check_user_model,
    load_tensorflow,
    user_builder,
    user_classes,
    user_source,
)


def _keras():  # noqa: ANN202
    load_tensorflow()  # its start-up lines kept off the terminal
    import tf_keras

    return tf_keras


def build(arch: dict[str, Any], workspace: Path | None = None):  # noqa: ANN201
    keras = _keras()
    layers = keras.layers
    template = arch["template"]
    shape = tuple(arch["input_shape"])
    n_classes = len(arch["classes"])
    hp = arch["hyperparameters"]
    flat = int(np.prod(shape))
    if template == "bbc-net":
        h2 = max(16, hp["hidden"] // 2)
        inp = keras.Input(shape=(flat,), name="input")
        x = layers.Dense(hp["hidden"])(inp)
        x = layers.LayerNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Dropout(hp["dropout"])(x)
        x = layers.Dense(h2)(x)
        x = layers.LayerNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Dropout(hp["dropout"])(x)
        out = layers.Dense(n_classes, name="logits")(x)
        return keras.Model(inp, out, name="bbc_net")
    if template == "mlp":
        inp = keras.Input(shape=(flat,), name="input")
        x = inp
        for _ in range(max(1, hp.get("layers", 2))):
            x = layers.Dense(hp["hidden"], activation="relu")(x)
            x = layers.Dropout(hp["dropout"])(x)
        out = layers.Dense(n_classes, name="logits")(x)
        return keras.Model(inp, out, name="mlp")
    if template == "cnn":
        if len(shape) != 3:
            raise ValueError(f"the cnn template needs images, got input shape {shape}")
        inp = keras.Input(shape=shape, name="input")
        x = inp
        for filters in (32, 64):
            x = layers.Conv2D(filters, 3, padding="same")(x)
            x = layers.BatchNormalization(momentum=0.9)(x)  # as PyTorch's default
            x = layers.ReLU()(x)
            x = layers.MaxPooling2D(2)(x)
        x = layers.Dropout(0.25)(x)
        x = layers.Flatten()(x)
        x = layers.Dense(hp["hidden"], activation="relu")(x)
        x = layers.Dropout(hp["dropout"])(x)
        out = layers.Dense(n_classes, name="logits")(x)
        return keras.Model(inp, out, name="small_cnn")
    model = user_builder(template, workspace, arch.get("source"))(shape, n_classes, hp)  # the code it was trained with
    if not isinstance(model, keras.Model):
        raise ValueError(f"{template}: build_model must return a Keras (tf_keras) Model for the keras framework")
    return model


def input_layout(template: str, input_shape: tuple[int, ...]) -> str:
    if len(input_shape) == 1:
        return "flat"
    return "NHWC" if template == "cnn" or template.startswith("src:") else "flat"


def _as_input(X: Any, idx: np.ndarray | None, layout: str) -> np.ndarray:
    xb = X[idx] if idx is not None else X
    xb = xb.toarray() if hasattr(xb, "toarray") else np.asarray(xb)
    if layout == "flat":
        xb = xb.reshape(len(xb), -1)
    return np.ascontiguousarray(xb, dtype=np.float32)


def train(X: Any, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, classes: list[str],
          cfg: TrainConfig, on_epoch: EpochCallback | None = None) -> TrainResult:
    tf = load_tensorflow()

    keras = _keras()
    keras.utils.set_random_seed(cfg.seed)
    shape = tuple(X.shape[1:])
    arch = {"framework": "keras", "template": cfg.template, "input_shape": list(shape), "classes": classes,
            "hyperparameters": cfg.hyperparameters(), "layout": input_layout(cfg.template, shape)}
    source = cfg.source or user_source(cfg.template, cfg.workspace)
    if source is not None:  # a checkpoint holds the whole model; a student (distill) is built from this code
        arch["source"] = source
    model = build(arch, cfg.workspace)
    if cfg.template.startswith("src:") and len(train_idx):
        x0 = _as_input(X, train_idx[:2], arch["layout"])
        check_user_model(cfg.template, lambda: model(x0, training=False), tuple(x0.shape), len(classes))
    if cfg.init:
        warm_start(model, cfg.init, classes, flat_input=len(shape) == 1)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg.lr, weight_decay=cfg.weight_decay or None),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    x_tr, y_tr = _as_input(X, train_idx, arch["layout"]), y[train_idx]
    x_va, y_va = _as_input(X, val_idx, arch["layout"]), y[val_idx]
    stopper = EarlyStopping(cfg.patience)
    history: list[dict[str, float]] = []
    state: dict[str, Any] = {"best": None, "stopped": False, "error": None, "t0": time.perf_counter()}

    class _Cb(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):  # noqa: ANN001, ANN202
            state["t0"] = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):  # noqa: ANN001, ANN202
            logs = logs or {}
            m = {"train_loss": float(logs["loss"]), "train_accuracy": float(logs["accuracy"]),
                 "val_loss": float(logs["val_loss"]), "val_accuracy": float(logs["val_accuracy"]),
                 "epoch_seconds": time.perf_counter() - state["t0"]}
            history.append(m)
            improved, stop = stopper.update(epoch + 1, m["val_loss"])
            if improved:
                state["best"] = model.get_weights()
            try:
                if on_epoch is not None:
                    on_epoch(epoch + 1, m)
            except StopTraining as exc:
                state["error"] = exc
                self.model.stop_training = True
                return
            if stop:
                state["stopped"] = True
                self.model.stop_training = True

    t_start = time.perf_counter()
    model.fit(x_tr, y_tr, validation_data=(x_va, y_va), epochs=cfg.epochs, batch_size=cfg.batch_size,
              shuffle=True, verbose=0, callbacks=[_Cb()])
    if state["error"] is not None:
        raise state["error"]
    if state["best"] is not None:
        model.set_weights(state["best"])
    fd, path = tempfile.mkstemp(suffix=".keras", prefix="cdl-ckpt-")
    os.close(fd)
    model.save(path)
    dev = "gpu" if tf.config.list_physical_devices("GPU") else "cpu"  # as the torch trainer names it ("CPU" beside "cpu")
    res = TrainResult("keras", cfg.template, history, stopper.best_epoch or len(history), Path(path), arch, dev,
                      time.perf_counter() - t_start, state["stopped"])
    return res


def warm_start(model, init: dict[str, Any], classes: list[str], flat_input: bool) -> None:  # noqa: ANN001
    """Load init_from's weights (a saved Keras model) into `model`, layer by layer in order
    (runtime.ml.common.carry_weights says how they are matched)."""
    keras = _keras()
    try:
        src_model = load(Path(init["checkpoint"]))
    except Exception as exc:  # noqa: BLE001
        raise WarmStartError(f"init_from {init['ref']}: not a saved Keras model ({type(exc).__name__}: "
                             f"{first_line(exc)})") from None
    src_layers = [layer for layer in src_model.layers if layer.weights]
    dst_layers = [layer for layer in model.layers if layer.weights]
    if len(src_layers) != len(dst_layers):
        raise WarmStartError(f"init_from {init['ref']} does not fit this model: it has {len(src_layers)} layers "
                             f"with weights, this model {len(dst_layers)}")
    dense = [i for i, layer in enumerate(dst_layers) if isinstance(layer, keras.layers.Dense)]
    slots: list[WeightSlot] = []
    for i, (a, b) in enumerate(zip(src_layers, dst_layers, strict=True)):
        sw, dw = a.get_weights(), b.get_weights()
        for j, d in enumerate(dw):
            term = 0 if flat_input and dense and i == dense[0] and j == 0 else None
            cls = (1 if j == 0 else 0) if dense and i == dense[-1] and j < 2 else None
            slots.append(WeightSlot(f"{b.name}/{b.weights[j].name.split('/')[-1]}", sw[j] if j < len(sw) else None,
                                    d, term_axis=term, class_axis=cls))
    values = iter(carry_weights(slots, init, classes))
    for b in dst_layers:
        b.set_weights([next(values) for _ in b.get_weights()])


def load(checkpoint: Path, workspace: Path | None = None, arch: dict[str, Any] | None = None):  # noqa: ANN201
    """The model in a checkpoint; `arch` (the version's) gives the layers a src: model's own code defines, which
    Keras cannot rebuild from the file alone."""
    keras = _keras()
    custom = {n: c for n, c in user_classes(arch).items() if issubclass(c, keras.layers.Layer)}
    src = Path(checkpoint)
    if src.suffix in (".keras", ".h5"):
        return keras.models.load_model(src, compile=False, custom_objects=custom or None)
    # artifacts are stored by hash, without a suffix, and Keras goes by the suffix: a named copy, removed once
    # loaded (each evaluation, export and prediction left a copy of the model in the system's temp folder)
    fd, tmp = tempfile.mkstemp(suffix=".keras", prefix="cdl-load-")
    os.close(fd)
    try:
        Path(tmp).write_bytes(src.read_bytes())
        return keras.models.load_model(tmp, compile=False, custom_objects=custom or None)
    finally:
        Path(tmp).unlink(missing_ok=True)


def predict_proba(checkpoint: Path, X: Any, arch: dict[str, Any], workspace: Path | None = None) -> np.ndarray:
    tf = load_tensorflow()

    model = load(checkpoint, workspace, arch)
    out = []
    for i in range(0, X.shape[0], 1024):
        xb = _as_input(X, np.arange(i, min(i + 1024, X.shape[0])), arch["layout"])
        out.append(tf.nn.softmax(model(xb, training=False)).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(arch["classes"])), np.float32)
