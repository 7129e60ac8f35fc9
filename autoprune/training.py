"""Seeded training and evaluation loops, shared by baseline training and fine-tuning.

    >>> from autoprune.data import digits
    >>> from autoprune.models import create_model
    >>> data = digits()
    >>> loaders = data.loaders(batch_size=64)
    >>> model = create_model("mlp", data.num_classes, data.input_shape, hidden=(32,))
    >>> _ = train(model, loaders.train, epochs=1, seed=0)
    >>> evaluate(model, loaders.val).accuracy > 0.5
    True

Masked weights stay at zero: after every optimizer step the model's masks are applied
again (:func:`autoprune.apply_masks`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import _checks
from ._masking import apply_masks
from ._threads import ThreadPicker, as_chosen
from .errors import ConfigError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class EvalResult:
    accuracy: float
    loss: float
    samples: int


@dataclass
class TrainResult:
    loss: float
    steps: int
    seconds: float


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def inference(model: nn.Module, x: torch.Tensor) -> Any:
    """``model(x)`` in eval mode without gradients, the model's mode put back after.

    >>> net = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5)).train()
    >>> inference(net, torch.ones(1, 3)).shape, net.training
    (torch.Size([1, 2]), True)
    """
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(x)
    finally:
        model.train(was)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, *, max_batches: int | None = None) -> EvalResult:
    """Top-1 accuracy and mean cross-entropy of ``model`` on ``loader`` (eval mode)."""
    was = model.training
    model.eval()
    device = _device_of(model)
    correct = total = 0
    loss_sum = 0.0
    try:
        with as_chosen():  # on a busy CPU, the threads training found fastest
            for i, (x, y) in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                out = model(x)
                loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
                correct += int((out.argmax(dim=1) == y).sum())
                total += int(y.numel())
    finally:
        model.train(was)
    if total == 0:
        return EvalResult(0.0, float("nan"), 0)
    return EvalResult(correct / total, loss_sum / total, total)


def make_optimizer(
    model: nn.Module,
    name: str = "sgd",
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0
        )
    if name == "adam":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"optimizer: expected 'sgd' or 'adam', got {name!r}")


def _check_training(
    schedule: str,
    optimizer: str,
    epochs: float,
    lr: float,
    momentum: float,
    weight_decay: float,
    max_steps: int | None,
) -> None:
    _checks.choice("schedule", schedule, ("cosine", "constant"))
    _checks.choice("optimizer", optimizer, ("sgd", "adam"))
    _checks.number("epochs", epochs, 0)
    _checks.number("lr", lr, 0, low_open=True)
    _checks.number("momentum", momentum, 0, 1)
    _checks.number("weight_decay", weight_decay, 0)
    if max_steps is not None:
        _checks.number("max_steps", max_steps, 0, integer=True)


def train(
    model: nn.Module,
    loader: Iterable,
    *,
    epochs: float = 1,
    lr: float = 0.05,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: str = "cosine",
    max_steps: int | None = None,
    start: int = 0,
    stop: int | None = None,
    seed: int | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    after_step: Callable[[nn.Module], None] | None = None,
    progress: bool = False,
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` on ``loader`` with SGD (or AdamW) and a cosine or constant schedule.

    Args:
        epochs: passes over the loader (fractions allowed).
        max_steps: stop after this many optimizer steps (overrides ``epochs``).
        start, stop: run only the steps ``[start, stop)`` of the schedule, for training
            split in phases (the learning rate continues where the last phase left it;
            the optimizer's momentum starts afresh).
        extra_loss: a penalty added to the loss each step (the L-step of L-C uses it).
        after_step: called after each optimizer step (masks are re-applied before it).
        seed: seeds torch and the loader's shuffling, for a reproducible run.
        progress: show a tqdm progress bar.
    """
    _check_training(schedule, optimizer, epochs, lr, momentum, weight_decay, max_steps)
    if seed is not None:
        seed_everything(seed)
        gen = getattr(loader, "generator", None)
        if isinstance(gen, torch.Generator):
            gen.manual_seed(seed)  # the same shuffles on every seeded run
    n_batches = len(loader)  # type: ignore[arg-type]
    if n_batches == 0:
        raise ConfigError("loader: the training loader is empty")
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("model: it has no trainable parameters")
    steps = max_steps if max_steps is not None else max(1, math.ceil(epochs * n_batches))
    stop = steps if stop is None else min(int(stop), steps)
    if not 0 <= start <= stop:
        raise ConfigError(f"start: expected 0 <= start <= stop ({stop}), got {start}")
    opt = make_optimizer(model, optimizer, lr, momentum, weight_decay)
    sched = (
        torch.optim.lr_scheduler.LambdaLR(
            opt, lambda k: 0.5 * (1.0 + math.cos(math.pi * min(start + k, steps) / steps))
        )
        if schedule == "cosine"
        else None
    )
    loss_fn = loss_fn or F.cross_entropy
    device = _device_of(model)
    model.train()
    began = time.perf_counter()
    done = start
    last = float("nan")
    bar = tqdm(total=stop - start, desc=desc, disable=not progress, leave=False)
    # on a CPU shared with other processes, fewer threads may train faster (see _threads;
    # with one thread to start from, it only counts steps)
    picker = ThreadPicker(torch.get_num_threads() if device.type == "cpu" else 1)
    try:
        while done < stop:
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss = loss_fn(model(x), y)
                if extra_loss is not None:
                    loss = loss + extra_loss(model)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                apply_masks(model)
                if after_step is not None:
                    after_step(model)
                last = loss.item()
                done += 1
                bar.update(1)
                bar.set_postfix(loss=f"{last:.3f}", refresh=False)
                picker.step_done()
                if done >= stop:
                    break
    finally:
        picker.close()
    bar.close()
    model.eval()
    return TrainResult(last, done - start, time.perf_counter() - began)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Iterable, batches: int = 10) -> None:
    """Re-estimate BatchNorm running statistics on a few training batches.

    Pruning shifts the activations the statistics were measured on; this is the cheap
    repair used before evaluating a pruned candidate.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
    device = _device_of(model)
    model.train()
    with as_chosen():  # on a busy CPU, the threads training found fastest
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            model(x.to(device, non_blocking=True))
    for m, mom in saved.items():
        m.momentum = mom
    model.eval()
