"""PyTorch templates and training loop. Imported only inside steps (torch takes a second to load)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from runtime.domain.errors import first_line
from runtime.ml.common import (
    EarlyStopping,
    EpochCallback,
    TrainConfig,
    TrainResult,
    WarmStartError,
    WeightSlot,
    carry_weights,
    check_user_model,
    user_builder,
    user_source,
)


class BBCNet(nn.Module):
    """The thesis' BBC network: linear layers with layer norm and dropout."""

    def __init__(self, n_in: int, n_classes: int, hidden: int, dropout: float):
        super().__init__()
        h2 = max(16, hidden // 2)
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, h2), nn.LayerNorm(h2), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(h2, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLP(nn.Module):
    def __init__(self, n_in: int, n_classes: int, hidden: int, dropout: float, layers: int = 2):
        super().__init__()
        mods: list[nn.Module] = [nn.Flatten()]
        width = n_in
        for _ in range(max(1, layers)):
            mods += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        mods.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv blocks with batch norm, then a dense layer: ~92 % on Fashion-MNIST in a few CPU minutes."""

    def __init__(self, channels: int, height: int, width: int, n_classes: int, hidden: int, dropout: float):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(0.25),
        )
        flat = 64 * (height // 4) * (width // 4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def input_layout(template: str, input_shape: tuple[int, ...]) -> str:
    """How the model takes its input: 'flat' vectors, or NCHW images (PyTorch's convolution layout)."""
    if len(input_shape) == 1:
        return "flat"
    return "NCHW" if template == "cnn" or template.startswith("src:") else "flat"


def build(arch: dict[str, Any], workspace: Path | None = None) -> nn.Module:
    template = arch["template"]
    shape = tuple(arch["input_shape"])
    n_classes = len(arch["classes"])
    hp = arch["hyperparameters"]
    n_in = int(np.prod(shape))
    if template == "bbc-net":
        return BBCNet(n_in, n_classes, hp["hidden"], hp["dropout"])
    if template == "mlp":
        return MLP(n_in, n_classes, hp["hidden"], hp["dropout"], hp.get("layers", 2))
    if template == "cnn":
        if len(shape) != 3:
            raise ValueError(f"the cnn template needs images, got input shape {shape}")
        h, w, c = shape
        return SmallCNN(c, h, w, n_classes, hp["hidden"], hp["dropout"])
    # a checkpoint keeps its src/ code (arch["source"]): a version loads as it was trained after the file changed
    model = user_builder(template, workspace, arch.get("source"))(shape, n_classes, hp)
    if not isinstance(model, nn.Module):
        raise ValueError(f"{template}: build_model must return a torch.nn.Module for the torch framework")
    return model


def device() -> torch.device:
    if torch.cuda.is_available():
        if _distributed():
            return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        return torch.device("cuda")
    return torch.device("cpu")


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class _Batches:
    """Mini-batches from dense arrays or a CSR matrix, in a layout the model takes."""

    def __init__(self, X: Any, y: np.ndarray | None, layout: str):
        self.X, self.y, self.layout = X, y, layout
        self.sparse = hasattr(X, "tocsr")

    def get(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        xb = self.X[idx]
        xb = xb.toarray() if self.sparse else np.asarray(xb)
        if self.layout == "NCHW":
            xb = xb.transpose(0, 3, 1, 2)
        elif self.layout == "flat":
            xb = xb.reshape(len(xb), -1)
        x = torch.from_numpy(np.ascontiguousarray(xb, dtype=np.float32))
        y = torch.from_numpy(self.y[idx]) if self.y is not None else None
        return x, y


def _evaluate(model: nn.Module, data: _Batches, idx: np.ndarray, dev: torch.device, bs: int = 512) -> tuple[float, float]:
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, len(idx), bs):
            x, y = data.get(idx[i : i + bs])
            x, y = x.to(dev), y.to(dev)
            out = model(x)
            total += float(loss_fn(out, y))
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
    return total / max(1, n), correct / max(1, n)


def train(X: Any, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, classes: list[str],
          cfg: TrainConfig, on_epoch: EpochCallback | None = None) -> TrainResult:
    """Train `cfg.template`. Under torchrun (torch.distributed initialized), every rank takes its share of
    each global mini-batch of `cfg.batch_size`, DDP averages the gradients, and every rank ends with the same
    weights; `on_epoch` should then be given on rank 0 only."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    ddp = _distributed()
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if ddp else (0, 1)
    # OMP_NUM_THREADS caps the threads (DDP ranks and tuning workers sharing a machine set it)
    threads = int(os.environ.get("OMP_NUM_THREADS") or 0)
    torch.set_num_threads(max(1, threads or os.cpu_count() or 1))
    dev = device()
    shape = tuple(X.shape[1:])
    arch = {"framework": "torch", "template": cfg.template, "input_shape": list(shape), "classes": classes,
            "hyperparameters": cfg.hyperparameters(), "layout": input_layout(cfg.template, shape)}
    source = cfg.source or user_source(cfg.template, cfg.workspace)
    if source is not None:
        arch["source"] = source
    model = build(arch, cfg.workspace)
    if cfg.template.startswith("src:") and len(train_idx):
        x0, _ = _Batches(X, None, arch["layout"]).get(train_idx[:2])

        def first_pass() -> torch.Tensor:
            model.eval()
            with torch.no_grad():
                return model(x0)

        check_user_model(cfg.template, first_pass, tuple(x0.shape), len(classes))
        model.train()
    if cfg.init:
        warm_start(model, cfg.init, classes, flat_input=len(shape) == 1)
    model = model.to(dev)
    net: nn.Module = model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    data = _Batches(X, y, arch["layout"])
    rng = np.random.default_rng(cfg.seed)
    stopper = EarlyStopping(cfg.patience)
    best_state = None
    history: list[dict[str, float]] = []
    t_start = time.perf_counter()
    stopped = False
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        net.train()
        order = rng.permutation(train_idx)  # the same on every rank (same seed)
        seen, loss_sum, correct = 0, 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            batch = order[i : i + cfg.batch_size]
            if ddp:
                if len(batch) < world:
                    continue  # a last batch too small to give every rank an item
                batch = batch[rank::world]
            xb, yb = data.get(batch)
            xb, yb = xb.to(dev), yb.to(dev)
            opt.zero_grad(set_to_none=True)
            out = net(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(yb)
            correct += int((out.argmax(1) == yb).sum())
            seen += len(yb)
        if ddp:
            totals = torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device=dev)
            torch.distributed.all_reduce(totals)
            loss_sum, correct, seen = float(totals[0]), int(totals[1]), int(totals[2])
        val_loss, val_acc = _evaluate(model, data, val_idx, dev)
        m = {"train_loss": loss_sum / max(1, seen), "train_accuracy": correct / max(1, seen),
             "val_loss": val_loss, "val_accuracy": val_acc, "epoch_seconds": time.perf_counter() - t0}
        history.append(m)
        improved, stop = stopper.update(epoch, val_loss)
        if ddp:  # every rank takes rank 0's decision, so no rank waits for a peer that stopped
            flags = torch.tensor([int(improved), int(stop)], device=dev)
            torch.distributed.broadcast(flags, 0)
            improved, stop = bool(flags[0]), bool(flags[1])
        if improved:
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if on_epoch is not None:
            on_epoch(epoch, m)  # may raise StopTraining (pruned, cancelled)
        if stop:
            stopped = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    fd, path = tempfile.mkstemp(suffix=".pt", prefix="cdl-ckpt-")
    os.close(fd)
    torch.save({"arch": arch, "state_dict": model.state_dict()}, path)
    return TrainResult("torch", cfg.template, history, stopper.best_epoch or len(history), Path(path), arch,
                       str(dev), time.perf_counter() - t_start, stopped)


def warm_start(model: nn.Module, init: dict[str, Any], classes: list[str], flat_input: bool) -> None:
    """Load init_from's weights into `model` (runtime.ml.common.carry_weights says how they are matched)."""
    try:
        blob = torch.load(init["checkpoint"], map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise WarmStartError(f"init_from {init['ref']}: not a PyTorch weights file ({type(exc).__name__}: "
                             f"{first_line(exc)})") from None
    src = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(src, dict) or not src or not all(torch.is_tensor(v) for v in src.values()):
        raise WarmStartError(f"init_from {init['ref']}: holds no state_dict (a dict of tensors, or "
                             "{'state_dict': ...})")
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    first = f"{linears[0]}.weight" if linears and flat_input else None
    last = {f"{linears[-1]}.weight", f"{linears[-1]}.bias"} if linears else set()
    state = model.state_dict()
    slots = [WeightSlot(name, src[name].numpy() if name in src else None, t.numpy(),
                        term_axis=1 if name == first else None, class_axis=0 if name in last else None)
             for name, t in state.items()]
    values = carry_weights(slots, init, classes)
    model.load_state_dict({slot.name: torch.from_numpy(np.ascontiguousarray(v)) for slot, v in
                           zip(slots, values, strict=True)})


def load(checkpoint: Path, workspace: Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    blob = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = build(blob["arch"], workspace)
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, blob["arch"]


def predict_proba(checkpoint: Path, X: Any, workspace: Path | None = None, bs: int = 512) -> np.ndarray:
    model, arch = load(checkpoint, workspace)
    dev = device()
    model.to(dev)
    data = _Batches(X, None, arch["layout"])
    out = []
    with torch.no_grad():
        for i in range(0, X.shape[0], bs):
            x, _ = data.get(np.arange(i, min(i + bs, X.shape[0])))
            out.append(torch.softmax(model(x.to(dev)), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(arch["classes"])), np.float32)


def fine_tune(model: nn.Module, X: Any, y: np.ndarray, idx: np.ndarray, layout: str, epochs: int, lr: float,
              batch_size: int, seed: int, teacher: nn.Module | None = None, temperature: float = 4.0,
              alpha: float = 0.7, after_step=None, on_epoch=None) -> nn.Module:  # noqa: ANN001
    """A few more epochs on `idx` (compression: pruning, low-rank); with a teacher, knowledge distillation
    (soft targets at `temperature`, weight `alpha`, plus the hard labels)."""
    torch.manual_seed(seed)
    dev = device()
    model.to(dev).train()
    if teacher is not None:
        teacher.to(dev).eval()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    ce = nn.CrossEntropyLoss()
    kl = nn.KLDivLoss(reduction="batchmean")
    data = _Batches(X, y, layout)
    rng = np.random.default_rng(seed)
    for epoch in range(1, epochs + 1):
        model.train()
        for i in range(0, len(idx), batch_size):
            xb, yb = data.get(idx[i : i + batch_size])
            xb, yb = xb.to(dev), yb.to(dev)
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            loss = ce(out, yb)
            if teacher is not None:
                with torch.no_grad():
                    t_out = teacher(xb)
                soft = kl(torch.log_softmax(out / temperature, dim=1), torch.softmax(t_out / temperature, dim=1))
                loss = alpha * soft * temperature * temperature + (1 - alpha) * loss
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step(model)
        if on_epoch is not None:
            on_epoch(epoch)
        idx = rng.permutation(idx)
    return model.eval().cpu()
