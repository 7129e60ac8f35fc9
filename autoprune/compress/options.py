"""The search's options, each checked once, where it is made.

:class:`ProxyOptions` say how a candidate is scored cheaply, :class:`CalibrationOptions`
how that score's threshold is calibrated with real recoveries, and :class:`Budget` how
long the search may take (the per-unit ranges are :mod:`autoprune.compress.bounds`).

    >>> Budget(n_trials=10).timeout is None
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import _checks
from ..data import Batches, Data
from ..errors import ConfigError

THRESHOLDS = ("midpoint", "held")


@dataclass(frozen=True)
class ProxyOptions:
    """How each candidate of the search is scored: its *proxy accuracy*.

    A candidate is pruned, made physical where the scheme allows, its BatchNorm
    statistics recalibrated on ``bn_batches`` training batches, fine-tuned for
    ``finetune_epochs`` (at least ``min_finetune_steps`` minibatches; 0 epochs for none)
    at ``finetune_lr`` (cosine decay), and measured on ``val_batches`` validation batches
    (None: all).

    >>> ProxyOptions(finetune_epochs=0.5).bn_batches
    20
    """

    bn_batches: int = 20
    finetune_epochs: float = 0.25
    min_finetune_steps: int = 10
    finetune_lr: float = 0.02
    val_batches: int | None = None

    def __post_init__(self) -> None:
        _checks.number("proxy.bn_batches", self.bn_batches, 0, integer=True)
        _checks.number("proxy.min_finetune_steps", self.min_finetune_steps, 0, integer=True)
        _checks.number("proxy.finetune_epochs", self.finetune_epochs, 0)
        _checks.number("proxy.finetune_lr", self.finetune_lr, 0, low_open=True)
        _checks.optional_number("proxy.val_batches", self.val_batches, 1, integer=True)


@dataclass(frozen=True)
class CalibrationOptions:
    """How the search's threshold is calibrated.

    The proxy accuracy underestimates what recovery achieves, more so the more is pruned,
    so comparing it with ``eps`` directly would stop the search far too early. A
    bisection over uniform plans first finds the most pruned one that keeps ``eps`` after
    ``epochs`` of real fine-tuning; the search's threshold ``tau`` lies halfway between
    that plan's proxy drop and that of the next uniform plan, which broke ``eps``.

    Attributes:
        enabled: calibrate (False: the threshold is ``eps`` itself).
        epochs: fine-tuning of each calibration plan (default: the recovery's own when it
            is :class:`~autoprune.recovery.FineTune`, else 3).
        steps: bisection steps, at most (0: no calibration).
        share: with a ``timeout``, the bisection stops before it would use more than
            this share of it, once a plan has held eps (before, it goes on while a step
            fits the whole timeout: with no plan that holds, nothing else can be returned).
        threshold: where ``tau`` lies: ``"midpoint"`` (halfway from the held plan's proxy
            drop to the broken one's) or ``"held"`` (the held plan's proxy drop: a
            candidate is feasible when the proxy rates it no worse than the most pruned
            uniform plan that held eps); never below ``eps``.

    >>> CalibrationOptions(steps=2).active
    True
    """

    enabled: bool = True
    epochs: float | None = None
    steps: int = 5
    share: float = 0.7
    threshold: str = "midpoint"

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise _checks.fail("calibration.enabled", "true or false", self.enabled)
        _checks.optional_number("calibration.epochs", self.epochs, 0)
        _checks.number("calibration.steps", self.steps, 0, integer=True)
        _checks.number("calibration.share", self.share, 0, 1, low_open=True)
        _checks.choice("calibration.threshold", self.threshold, THRESHOLDS)

    @property
    def active(self) -> bool:
        """Whether a calibration runs at all."""
        return self.enabled and self.steps > 0


@dataclass(frozen=True)
class Budget:
    """How long the search may run: ``n_trials`` completed trials, ``timeout`` seconds for
    the whole run (sensitivity analysis, calibration, recovery and the measurements), or both;
    ``trial_timeout`` seconds for scoring one candidate (None: no limit), and
    ``max_failures`` trials in a row that may fail before the search stops.

    >>> Budget(n_trials=None, timeout=60).timeout
    60.0
    """

    n_trials: int | None = 30
    timeout: float | None = None
    trial_timeout: float | None = None
    max_failures: int = 5

    def __post_init__(self) -> None:
        if self.n_trials is None and self.timeout is None:
            raise ConfigError("n_trials, timeout: give a number of trials, a timeout, or both")
        _checks.optional_number("n_trials", self.n_trials, 0, integer=True)
        timeout = _checks.optional_number("timeout", self.timeout, 0, low_open=True)
        object.__setattr__(self, "timeout", timeout)
        limit = _checks.optional_number("trial_timeout", self.trial_timeout, 0, low_open=True)
        object.__setattr__(self, "trial_timeout", limit)
        _checks.number("max_failures", self.max_failures, 1, integer=True)


def check_eps(eps: Any) -> float:
    """The accuracy budget: a number in [0, 1)."""
    return _checks.fraction("eps", eps)


def check_space(space: Any, objectives: int) -> str:
    """A search space by name; the shape space ranks plans of one cost, for one objective.

    >>> check_space("shape", 1)
    'shape'
    """
    from .space import SPACES

    _checks.choice("space", space, SPACES)
    if space == "shape" and objectives > 1:
        raise ConfigError(
            "space: 'shape' searches plans of one cost for one objective; give one "
            "objective, or use space='offsets' for several"
        )
    return str(space)


def check_warm_start(levels: Any) -> tuple[float, ...]:
    """Uniform levels tried first, each in [0, 1]."""
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence):
        raise _checks.fail("warm_start", "a list of levels in [0, 1]", levels)
    out = []
    for level in levels:
        if isinstance(level, bool) or not isinstance(level, (int, float)):
            raise ConfigError(f"warm_start: levels must be in [0, 1], got {level!r}")
        if math.isnan(level) or not 0 <= level <= 1:
            raise ConfigError(f"warm_start: levels must be in [0, 1], got {level!r}")
        out.append(float(level))
    return tuple(out)


def check_data(data: Any) -> Data | Sequence[Batches]:
    """A :class:`~autoprune.data.Data` or ``(train, val, test)`` loaders."""
    if data is None:
        raise ConfigError(
            "data: pass a Data (e.g. autoprune.load_data('digits')) or (train, val, test) loaders"
        )
    if not isinstance(data, Data) and not (isinstance(data, (tuple, list)) and len(data) == 3):
        raise ConfigError("data: expected a Data or a (train, val, test) tuple of loaders")
    if isinstance(data, Data):
        return data
    for split, loader in zip(("train", "val", "test"), data):
        try:
            empty = len(loader) == 0
        except TypeError:
            raise ConfigError(
                f"data: the {split} loader has no length; pass a DataLoader or a list of batches"
            ) from None
        if empty:
            raise ConfigError(f"data: the {split} loader is empty; every split needs batches")
    return data


def check_instance(param: str, value: Any, cls: type, what: str) -> None:
    """None, or an instance of ``cls``."""
    if value is not None and not isinstance(value, cls):
        raise ConfigError(f"{param}: expected {what}, got {value!r}")


def option(param: str, value: Any, cls: type) -> Any:
    """An options object of ``cls``; None gives its defaults."""
    if value is None:
        return cls()
    check_instance(param, value, cls, f"a {cls.__name__}")
    return value
