"""Compression of PyTorch models: magnitude pruning with fine-tuning, knowledge distillation into a smaller
student, low-rank (SVD) factorization of linear layers."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from runtime.ml import torch_backend as tb


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def sparsity(model: nn.Module) -> float:
    zeros = total = 0
    for m, name in prunable(model):
        w = getattr(m, name)
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / max(1, total)


def prune(model: nn.Module, X: Any, y: np.ndarray, idx: np.ndarray, arch: dict[str, Any], amount: float,
          epochs: int, lr: float, seed: int, on_epoch=None) -> tuple[nn.Module, float]:  # noqa: ANN001
    """Global L1 (magnitude) pruning of Linear and Conv2d weights, fine-tuned with the masks in place."""
    import torch.nn.utils.prune as tprune

    model = copy.deepcopy(model)
    params = prunable(model)
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=amount)
    if epochs > 0:
        hp = arch["hyperparameters"]
        tb.fine_tune(model, X, y, idx, arch["layout"], epochs, lr, hp["batch_size"], seed, on_epoch=on_epoch)
    for m, name in params:
        tprune.remove(m, name)
    return model.eval(), sparsity(model)


def distill(teacher: nn.Module, X: Any, y: np.ndarray, idx: np.ndarray, arch: dict[str, Any], student_hidden: int,
            epochs: int, lr: float, temperature: float, alpha: float, seed: int,
            on_epoch=None) -> tuple[nn.Module, dict[str, Any]]:  # noqa: ANN001
    student_arch = copy.deepcopy(arch)
    student_arch["hyperparameters"] = {**arch["hyperparameters"], "hidden": int(student_hidden)}
    student = tb.build(student_arch)
    tb.fine_tune(student, X, y, idx, arch["layout"], epochs, lr, arch["hyperparameters"]["batch_size"], seed,
                 teacher=teacher, temperature=temperature, alpha=alpha, on_epoch=on_epoch)
    return student.eval(), student_arch


MIN_RANK = 8


class _LowRank(nn.Sequential):
    """A Linear(in, out) as Linear(in, rank, no bias) then Linear(rank, out)."""


def factorize(model: nn.Module, rank: int | float) -> tuple[nn.Module, list[dict[str, int]]]:
    """Replace each Linear layer by two of rank r (truncated SVD) where that has fewer parameters."""
    model = copy.deepcopy(model)
    done: list[dict[str, int]] = []

    def visit(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                n_in, n_out = child.in_features, child.out_features
                r = int(rank if rank >= 1 else max(MIN_RANK, round(rank * min(n_in, n_out))))
                if r * (n_in + n_out) >= n_in * n_out:  # no saving (e.g. a small classifier layer)
                    continue
                W = child.weight.detach().double()
                U, S, Vh = torch.linalg.svd(W, full_matrices=False)
                root = torch.sqrt(S[:r])
                first = nn.Linear(n_in, r, bias=False)
                second = nn.Linear(r, n_out, bias=child.bias is not None)
                first.weight.data = (root[:, None] * Vh[:r]).float()
                second.weight.data = (U[:, :r] * root[None, :]).float()
                if child.bias is not None:
                    second.bias.data = child.bias.detach().clone()
                setattr(parent, name, _LowRank(first, second))
                done.append({"in": n_in, "out": n_out, "rank": r})
            else:
                visit(child)

    visit(model)
    return model.eval(), done


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
