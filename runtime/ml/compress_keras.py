"""Compression of Keras (tf_keras) models: magnitude pruning and quantization-aware training with
tensorflow-model-optimization, knowledge distillation, low-rank factorization of Dense layers."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from runtime.ml import keras_backend as kb  # noqa: E402


def _keras():  # noqa: ANN202
    from runtime.ml.common import load_tensorflow

    load_tensorflow()  # its start-up lines kept off the terminal
    import tf_keras

    return tf_keras


def _xy(X: Any, y: np.ndarray, idx: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray]:
    return kb._as_input(X, idx, layout), y[idx]


def _epochs(on_epoch) -> list:  # noqa: ANN001
    """Keras callbacks that call on_epoch(epoch) after each epoch (its progress, and a cancel's checkpoint)."""
    if on_epoch is None:
        return []
    keras = _keras()
    return [keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs=None: on_epoch(epoch + 1))]


def _compile(model, lr: float) -> None:  # noqa: ANN001
    keras = _keras()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])


def sparsity(model) -> float:  # noqa: ANN001
    keras = _keras()
    zeros = total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense | keras.layers.Conv2D):
            w = layer.get_weights()[0]
            zeros += int((w == 0).sum())
            total += w.size
    return zeros / max(1, total)


def prune(model, X: Any, y: np.ndarray, idx: np.ndarray, arch: dict[str, Any], amount: float, epochs: int,
          lr: float, seed: int, on_epoch=None):  # noqa: ANN001, ANN201
    keras = _keras()  # TensorFlow first, its start-up lines kept off the terminal
    import tensorflow_model_optimization as tfmot

    keras.utils.set_random_seed(seed)
    schedule = tfmot.sparsity.keras.ConstantSparsity(amount, begin_step=0, frequency=1)

    def wrap(layer):  # noqa: ANN001, ANN202
        if isinstance(layer, keras.layers.Dense | keras.layers.Conv2D):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    pruned = keras.models.clone_model(model, clone_function=wrap)
    pruned.set_weights(model.get_weights()) if len(pruned.get_weights()) == len(model.get_weights()) else _copy_weights(model, pruned)
    _compile(pruned, lr)
    xs, ys = _xy(X, y, idx, arch["layout"])
    pruned.fit(xs, ys, epochs=max(1, epochs), batch_size=arch["hyperparameters"]["batch_size"], verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), *_epochs(on_epoch)])
    final = tfmot.sparsity.keras.strip_pruning(pruned)
    return final, sparsity(final)


def _copy_weights(src, dst) -> None:  # noqa: ANN001
    """Copy weights layer by layer by name (wrapped layers keep their inner layer's weights first)."""
    by_name = {layer.name: layer for layer in src.layers}
    for layer in dst.layers:
        inner = getattr(layer, "layer", layer)
        origin = by_name.get(inner.name)
        if origin is None:
            continue
        w = origin.get_weights()
        if not w:
            continue
        target = inner if hasattr(layer, "layer") else layer
        target.set_weights(w)


def qat(model, X: Any, y: np.ndarray, idx: np.ndarray, arch: dict[str, Any], epochs: int, lr: float,
        seed: int, on_epoch=None):  # noqa: ANN001, ANN201
    """Quantization-aware training of Dense and Conv2D layers (others, like LayerNormalization, stay float)."""
    keras = _keras()  # TensorFlow first, its start-up lines kept off the terminal
    import tensorflow_model_optimization as tfmot

    keras.utils.set_random_seed(seed)
    qk = tfmot.quantization.keras

    def annotate(layer):  # noqa: ANN001, ANN202
        if isinstance(layer, keras.layers.Dense | keras.layers.Conv2D):
            return qk.quantize_annotate_layer(layer)
        return layer

    annotated = keras.models.clone_model(model, clone_function=annotate)
    annotated.set_weights(model.get_weights())
    with qk.quantize_scope():
        q = qk.quantize_apply(annotated)
    _compile(q, lr)
    xs, ys = _xy(X, y, idx, arch["layout"])
    q.fit(xs, ys, epochs=max(1, epochs), batch_size=arch["hyperparameters"]["batch_size"], verbose=0,
          callbacks=_epochs(on_epoch))
    return q


def distill(teacher, X: Any, y: np.ndarray, idx: np.ndarray, arch: dict[str, Any], student_hidden: int, epochs: int,
            lr: float, temperature: float, alpha: float, seed: int, on_epoch=None):  # noqa: ANN001, ANN201
    import copy

    import tensorflow as tf

    keras = _keras()
    keras.utils.set_random_seed(seed)
    student_arch = copy.deepcopy(arch)
    student_arch["hyperparameters"] = {**arch["hyperparameters"], "hidden": int(student_hidden)}
    student = kb.build(student_arch)
    opt = keras.optimizers.Adam(learning_rate=lr)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    kl = keras.losses.KLDivergence()
    xs, ys = _xy(X, y, idx, arch["layout"])
    bs = arch["hyperparameters"]["batch_size"]
    rng = np.random.default_rng(seed)
    for epoch in range(1, max(1, epochs) + 1):
        if on_epoch is not None and epoch > 1:
            on_epoch(epoch - 1)
        order = rng.permutation(len(xs))
        for i in range(0, len(order), bs):
            b = order[i : i + bs]
            xb, yb = xs[b], ys[b]
            t_logits = teacher(xb, training=False)
            with tf.GradientTape() as tape:
                s_logits = student(xb, training=True)
                soft = kl(tf.nn.softmax(t_logits / temperature), tf.nn.softmax(s_logits / temperature))
                loss = alpha * soft * temperature * temperature + (1 - alpha) * ce(yb, s_logits)
            grads = tape.gradient(loss, student.trainable_variables)
            opt.apply_gradients(zip(grads, student.trainable_variables, strict=True))
    if on_epoch is not None:
        on_epoch(max(1, epochs))
    return student, student_arch


def factorize(model, rank: int | float):  # noqa: ANN001, ANN201
    """Dense(in -> out) becomes a LowRankDense with kernels (in x r) and (r x out) from a truncated SVD."""
    keras = _keras()
    import tensorflow as tf

    class LowRankDense(keras.layers.Layer):
        def __init__(self, units: int, rank: int, activation=None, use_bias: bool = True, **kw):  # noqa: ANN001
            super().__init__(**kw)
            self.units, self.rank, self.use_bias = units, rank, use_bias
            self.activation = keras.activations.get(activation)

        def build(self, shape):  # noqa: ANN001, ANN202
            self.u = self.add_weight("u", shape=(int(shape[-1]), self.rank))
            self.v = self.add_weight("v", shape=(self.rank, self.units))
            self.b = self.add_weight("b", shape=(self.units,), initializer="zeros") if self.use_bias else None

        def call(self, x):  # noqa: ANN001, ANN202
            out = tf.matmul(tf.matmul(x, self.u), self.v)
            if self.b is not None:
                out = out + self.b
            return self.activation(out)

    done: list[dict[str, int]] = []
    pending: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}

    def replace(layer):  # noqa: ANN001, ANN202
        if isinstance(layer, keras.layers.Dense):
            w = layer.get_weights()
            kernel = w[0]
            n_in, n_out = kernel.shape
            r = int(rank if rank >= 1 else max(8, round(rank * min(n_in, n_out))))
            if r * (n_in + n_out) < n_in * n_out:
                U, S, Vh = np.linalg.svd(kernel.astype(np.float64), full_matrices=False)
                root = np.sqrt(S[:r])
                pending[layer.name] = ((U[:, :r] * root).astype(np.float32), (root[:, None] * Vh[:r]).astype(np.float32),
                                       w[1] if layer.use_bias else None)
                done.append({"in": int(n_in), "out": int(n_out), "rank": r})
                return LowRankDense(n_out, r, activation=layer.activation, use_bias=layer.use_bias, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    new = keras.models.clone_model(model, clone_function=replace)
    by_name = {layer.name: layer for layer in model.layers}
    for layer in new.layers:
        if layer.name in pending:
            u, v, b = pending[layer.name]
            layer.set_weights([u, v] + ([b] if b is not None else []))
        elif layer.name in by_name and layer.get_weights():
            layer.set_weights(by_name[layer.name].get_weights())
    return new, done


def param_count(model) -> int:  # noqa: ANN001
    return int(sum(np.prod(w.shape) for w in model.get_weights()))


def fine_tune(model, X: Any, y: np.ndarray, idx: np.ndarray, arch: dict[str, Any], epochs: int, lr: float,
              seed: int, on_epoch=None) -> None:  # noqa: ANN001
    """A few epochs on the training indices at a low rate (a factorized model, as compress_torch's lowrank)."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    _compile(model, lr)
    xs, ys = _xy(X, y, idx, arch["layout"])
    model.fit(xs, ys, epochs=epochs, batch_size=arch["hyperparameters"]["batch_size"], verbose=0,
              callbacks=_epochs(on_epoch))
