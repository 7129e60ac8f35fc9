"""What every stage of a run reads: the frozen :class:`RunContext`, and the :class:`TimeBudget`.

>>> budget = TimeBudget(start=0.0, timeout=100.0, clock=lambda: 40.0)
>>> budget.record(25.0)
>>> budget.estimate(), budget.fits(2), budget.fits(3)
(25.0, True, False)
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import Batches, Data, Loaders
from ..deployment import Deployment
from ..objectives import Objective
from ..recovery import Recovery
from ..schemes import Scheme

logger = logging.getLogger("autoprune")

AccuracyFn = Callable[[nn.Module, Iterable], float]


def log_message(message: str, progress: bool) -> None:
    """Log to the ``autoprune`` logger; with progress bars and no handler, to stderr too."""
    logger.info(message)
    if progress and not logger.handlers:
        tqdm.write(message, file=sys.stderr)


class Limited:
    """The first ``n`` batches of a loader (all with None)."""

    def __init__(self, loader: Iterable, n: int | None) -> None:
        self.loader, self.n = loader, n

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if self.n is not None and i >= self.n:
                return
            yield batch

    def __len__(self) -> int:
        total = len(self.loader)  # type: ignore[arg-type]
        return total if self.n is None else min(total, self.n)


def loaders_of(
    data: Data | Sequence[Batches],
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    device: torch.device | None = None,
) -> Loaders:
    """Loaders from a :class:`~autoprune.data.Data` (in pinned memory when they feed a GPU),
    or the ``(train, val, test)`` given."""
    if isinstance(data, Data):
        pin = device is not None and device.type == "cuda"
        return data.loaders(
            batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed, pin_memory=pin
        )
    train_l, val_l, test_l = data
    return Loaders(train_l, val_l, test_l)


def example_input_of(
    data: Data | Sequence[Batches], loaders: Loaders, device: torch.device
) -> torch.Tensor:
    """One input, on ``device``: the data's own, or the first of the validation loader."""
    if isinstance(data, Data):
        return data.example_input(1).to(device)
    x, _ = next(iter(loaders.val))
    return x[:1].to(device)


@dataclass(frozen=True)
class RunContext:
    """The fixed facts of one run, shared by its stages.

    Attributes:
        original: a frozen copy of the model to compress (eval mode).
        example_input: one input on the model's device.
        loaders: train, val and test loaders.
        scheme, recovery, objectives: what the run prunes with, recovers with, optimises.
        accuracy: ``f(model, loader) -> float``, top-1 accuracy unless the user gave one.
        eps, relative: the accuracy budget (``relative``: as a share of the base).
        base: the original's accuracy on the whole validation split.
        base_proxy: its accuracy on the validation batches the proxy uses.
        deployment: the form the objectives deploy the model in; below float32, a plan
            holds eps only if its accuracy in that precision is within eps of ``base`` too.
        base_deployed: the original's validation accuracy in that precision (None in
            float32).
        reference: the original's value of each exact (deterministic) objective.
        seed: seeds every training run.
        progress: progress bars and log lines on stderr.
    """

    original: nn.Module
    example_input: torch.Tensor
    loaders: Loaders
    scheme: Scheme
    recovery: Recovery
    objectives: Sequence[Objective]
    accuracy: AccuracyFn
    eps: float
    relative: bool
    base: float
    base_proxy: float
    reference: dict[str, float] = field(default_factory=dict)
    deployment: Deployment = field(default_factory=Deployment)
    base_deployed: float | None = None
    seed: int = 0
    progress: bool = True

    def drop(self, accuracy: float, base: float | None = None) -> float:
        """The accuracy drop from ``base`` (default: :attr:`base`), relative if asked."""
        base = self.base if base is None else base
        drop = base - accuracy
        return drop / base if self.relative and base else drop

    @property
    def noisy(self) -> bool:
        """Whether an objective is a timing (two measurements of one model differ)."""
        return any(not o.metric.deterministic for o in self.objectives)

    def log(self, message: str) -> None:
        log_message(message, self.progress)


class TimeBudget:
    """The run's clock against its ``timeout``: how long a recovery takes, and whether more
    fit.

    A recovery's duration is estimated as the mean of the recoveries timed so far in this
    run, else of the calibration's (a fine-tune of similar cost when the recovery is not
    one), else 0. The last ``tail`` seconds are kept for measuring the result (as long as
    measuring the original took): the work must end by :attr:`deadline`, before them.
    """

    def __init__(
        self,
        start: float,
        timeout: float | None,
        calibrated: Sequence[float] = (),
        clock: Callable[[], float] = time.perf_counter,
        tail: float = 0.0,
    ) -> None:
        self.start = start
        self.timeout = timeout
        self.calibrated = list(calibrated)
        self.timed: list[float] = []
        self.clock = clock
        self.tail = max(0.0, float(tail))

    @property
    def deadline(self) -> float | None:
        """When the work before the final measurement must end (None: no limit)."""
        return None if self.timeout is None else self.start + self.timeout - self.tail

    def elapsed(self) -> float:
        return self.clock() - self.start

    def record(self, seconds: float) -> None:
        """A recovery of this run took ``seconds``."""
        self.timed.append(seconds)

    def estimate(self) -> float:
        """Seconds one recovery takes (see the class docstring)."""
        spent = self.timed or self.calibrated
        return sum(spent) / len(spent) if spent else 0.0

    def left(self) -> float:
        """Seconds left before the :attr:`deadline` (infinite without a timeout)."""
        deadline = self.deadline
        return math.inf if deadline is None else max(0.0, deadline - self.clock())

    def longest(self) -> float:
        """Seconds the slowest recovery took (this run's, else the calibration's; else 0)."""
        spent = self.timed or self.calibrated
        return max(spent, default=0.0)

    def need(self, recoveries: int = 1) -> float:
        """Seconds :meth:`fits` counts for ``recoveries`` more: the next at the
        :meth:`longest` one's time, the others at the :meth:`estimate`. Recoveries of less
        pruned plans, or on a loaded machine, take longer than the mean, and a run must not
        start one that would end past its timeout."""
        if recoveries <= 0:
            return 0.0
        return self.longest() + (recoveries - 1) * self.estimate()

    def fits(self, recoveries: int = 1, extra: float = 0.0) -> bool:
        """Whether ``recoveries`` more recoveries (:meth:`need`), after ``extra`` seconds of
        other work, fit before the deadline."""
        deadline = self.deadline
        return deadline is None or self.clock() + extra + self.need(recoveries) <= deadline

    def reserve(self, refining: bool) -> float:
        """Seconds the trials leave for recovering a finalist and, when ``refining``, one
        refinement step (an :meth:`estimate` each; at most 35% of the timeout)."""
        if self.timeout is None:
            return 0.0
        return min(0.35 * self.timeout, self.estimate() * (2 if refining else 1))

    def trials_timeout(self, refining: bool) -> float | None:
        """Seconds the study's trials may take: what is left, less the :meth:`reserve`."""
        if self.timeout is None:
            return None
        return max(1.0, self.timeout - self.tail - self.elapsed() - self.reserve(refining))


class Phases(dict):
    """Wall seconds of each phase of a run, in the order they ended."""

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        self[name] = time.perf_counter() - t
