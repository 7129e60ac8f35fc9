"""How many CPU threads train fastest right now, measured on the training loop's own steps.

PyTorch splits each CPU operation over ``torch.get_num_threads()`` threads and waits for
the slowest of them. When another process keeps a core busy, one thread waits for its
turn and every operation waits with it: on 2 cores beside one busy process, a
calibration step of the benchmark suite's ResNet-10 (proxy and one-epoch recovery) took
4.3x as long with 2 threads as on the quiet machine, and a training step took 0.66 s on
2 threads against 0.28 s on 1. A search run against a timeout then fits a quarter of its
recoveries, and its result depends on the machine's load.

:class:`ThreadPicker` times a few of the loop's steps at the configured thread count and
at fewer threads, trains on whichever ran fastest (fewer only when at least ``margin``
times faster), and measures again every ``every`` seconds, so a load that comes or goes
is followed. Steps shorter than ``min_step`` are never probed: small models train as they
would without it (and bit-for-bit the same). Evaluation and BatchNorm recalibration run
on the count the last training loop chose while its choice stands (:func:`as_chosen`).

    >>> times = iter([0.0, 0.5, 1.5, 2.5, 2.6, 2.7, 2.8])  # a fake clock, a step each
    >>> used = []
    >>> picker = ThreadPicker(2, probe_steps=2, clock=lambda: next(times), set_threads=used.append)
    >>> for _ in range(6):
    ...     picker.step_done()
    >>> used  # 1 s a step on 2 threads, 0.1 s on 1: 1 thread from then on
    [1]
    >>> picker.close(); used
    [1, 2]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ClassVar

import torch

logger = logging.getLogger("autoprune")


class ThreadPicker:
    """Chooses the thread count of a training loop by timing its steps (see the module
    docstring). Call :meth:`step_done` after every step, and :meth:`close` at the end
    (it restores the configured count)."""

    def __init__(
        self,
        threads: int,
        *,
        probe_steps: int = 4,
        every: float = 60.0,
        min_step: float = 0.05,
        margin: float = 1.3,
        clock: Callable[[], float] = time.perf_counter,
        set_threads: Callable[[int], None] = torch.set_num_threads,
    ) -> None:
        self.configured = self.threads = threads
        self.candidates = sorted({threads, threads - 1, threads // 2} - {0}, reverse=True)
        self.probe_steps, self.every = probe_steps, every
        self.min_step, self.margin = min_step, margin
        self.clock, self.set_threads = clock, set_threads
        self.last = clock()
        self.warm = 1  # the first step (allocations, caches) is timed for nobody
        self.queue = self._probe() if len(self.candidates) > 1 else []
        self.timed: dict[int, list[float]] = {}
        self.next_probe = float("inf")
        chosen, until = self.decided.get(threads, (threads, -float("inf")))
        if self.last < until:  # an earlier loop measured it lately: no probe before then
            self.queue, self.next_probe = [], until
            self._use(chosen)

    decided: ClassVar[dict[int, tuple[int, float]]] = {}
    """The last measured choice for each configured count, and until when it stands
    (short training loops one after another, such as the proxy's, would otherwise each
    spend steps probing)."""

    def _probe(self) -> list[int]:
        """The thread counts of the next steps: the configured count's first."""
        return [n for n in self.candidates for _ in range(self.probe_steps)]

    def _use(self, threads: int) -> None:
        if threads != self.threads:
            self.set_threads(threads)
            self.threads = threads

    def step_done(self) -> None:
        """Record the step that just ended, and set the thread count for the next one."""
        now = self.clock()
        seconds, self.last = now - self.last, now
        if self.warm:
            self.warm -= 1
        elif self.queue:
            n = self.queue.pop(0)
            self.timed.setdefault(n, []).append(seconds)
            done = self.timed[n]
            if n == self.configured and len(done) == self.probe_steps:
                if sum(done) / len(done) < self.min_step:  # too short to matter
                    self.queue = []
                    return
            if self.queue:
                self._use(self.queue[0])
            else:
                self._choose(now)
        elif now >= self.next_probe:
            self.queue, self.timed = self._probe(), {}
            self._use(self.queue[0])

    def _choose(self, now: float) -> None:
        mean = {n: sum(t) / len(t) for n, t in self.timed.items()}
        fastest = min(mean, key=mean.__getitem__)
        best = fastest if mean[self.configured] >= self.margin * mean[fastest] else self.configured
        before = self.decided.get(self.configured, (self.configured, 0.0))[0]
        if best != before:  # said once per change, not at every probe
            logger.info(
                f"training on {best} of {self.configured} CPU threads: a step took "
                f"{mean[self.configured]:.3f} s on {self.configured} and {mean[best]:.3f} s "
                f"on {best} (another process is using the cores); measured again every "
                f"{self.every:g} s"
                if best != self.configured
                else f"training on all {best} CPU threads again (fewer are no longer faster)"
            )
        self.next_probe = now + self.every
        self.decided[self.configured] = (best, self.next_probe)
        self._use(best)

    def close(self) -> None:
        """Restore the configured thread count."""
        self._use(self.configured)


@contextmanager
def as_chosen() -> Iterator[int]:
    """Run a block (an evaluation, a BatchNorm recalibration) on the thread count the last
    training loop chose, while that choice stands; yields the count.

    >>> with as_chosen() as threads:
    ...     threads == torch.get_num_threads()
    True
    """
    configured = torch.get_num_threads()
    chosen, until = ThreadPicker.decided.get(configured, (configured, 0.0))
    if chosen == configured or time.perf_counter() >= until:
        yield configured
        return
    torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        torch.set_num_threads(configured)
