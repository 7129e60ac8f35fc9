"""Stages of a shared study that must run exactly once: preparing it and finalizing it.

However many processes score a study's trials (on one machine or many, through one Optuna
storage), its preparation (calibration, bounds) and its finalization (recovering the
finalists, measuring, saving the result and report) must happen once. A process *claims*
a stage by creating an Optuna study named after it in the same storage, e.g.
``run1:finalize:36.1`` for finalizing ``run1`` at 36 complete trials: a storage's study
names are unique, so the creation is atomic and exactly one process succeeds, on
PostgreSQL, MySQL, SQLite and in memory alike. Nothing beside Optuna's own storage is
needed.

The claim records who holds it (host, pid, run directory) and, while its holder works, a
heartbeat; when the stage is done, what came of it. A claim whose holder died (its pid is
gone on this host, or its heartbeat stopped for ``stale`` seconds as a waiting process
sees it) is taken over by claiming the next generation (``.2``), atomically again.

    >>> import optuna
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> study = optuna.create_study(study_name="s")
    >>> claims = Claims(study, out_dir="runs/a")
    >>> first, mine = claims.settle("finalize:3")
    >>> mine, first.generation
    (True, 1)
    >>> claims.finish(first, {"feasible": True})
    >>> again, mine = Claims(study, out_dir="runs/b").settle("finalize:3", redo=False)
    >>> mine, again.done["feasible"], again.holder["out_dir"].endswith("runs/a")
    (False, True, True)
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.study import StudyDirection

from .study import pid_alive, uninterrupted


@dataclass(frozen=True)
class Claim:
    """One generation of a claim on a stage, as the storage holds it."""

    stage: str
    generation: int
    study_id: int
    holder: dict[str, Any]
    done: dict[str, Any] | None
    beat: int

    @property
    def by(self) -> str:
        """Who holds it: ``host:pid``."""
        return f"{self.holder.get('host', '?')}:{self.holder.get('pid', '?')}"


class Claims:
    """The claims on the stages of ``study``, as this process (in ``out_dir``) sees them.

    Args:
        study: the shared study.
        out_dir: this process's run directory, recorded in its claims.
        stale: seconds without a heartbeat after which a holder on another machine is taken
            for dead; ``beat_every``: how often a holder beats.
        poll: seconds between looks while waiting for another holder.
        log: where the waits and take-overs are reported.
    """

    def __init__(
        self,
        study: optuna.Study,
        out_dir: str | None = None,
        *,
        stale: float = 120.0,
        beat_every: float = 15.0,
        poll: float = 2.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.study = study
        self.storage = study._storage
        self.out_dir = os.path.abspath(out_dir) if out_dir is not None else None
        self.stale, self.beat_every, self.poll = stale, beat_every, poll
        self.log = log or (lambda message: None)
        self.started = self.names()  # the claims made before this process looked

    def _prefix(self, stage: str) -> str:
        return f"{self.study.study_name}:{stage}."

    def names(self) -> set[str]:
        """Every claim's name on this study now."""
        prefix = f"{self.study.study_name}:"
        return {
            s.study_name for s in self.storage.get_all_studies() if s.study_name.startswith(prefix)
        }

    def latest(self, stage: str) -> Claim | None:
        """The newest generation of the claim on ``stage`` (None: never claimed)."""
        prefix = self._prefix(stage)
        found = []
        for s in self.storage.get_all_studies():
            tail = s.study_name[len(prefix) :] if s.study_name.startswith(prefix) else ""
            if tail.isdigit():
                found.append((int(tail), s))
        if not found:
            return None
        generation, s = max(found, key=lambda pair: pair[0])
        attrs = s.user_attrs
        return Claim(
            stage=stage,
            generation=generation,
            study_id=s._study_id,
            holder=attrs.get("holder", {}),
            done=attrs.get("done"),
            beat=int(attrs.get("beat", 0)),
        )

    def me(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "out_dir": self.out_dir}

    def take(self, stage: str, generation: int) -> Claim | None:
        """Claim generation ``generation`` of ``stage``; None when another process has it."""
        name = f"{self._prefix(stage)}{generation}"
        with uninterrupted():
            try:
                study_id = self.storage.create_new_study([StudyDirection.MINIMIZE], name)
            except optuna.exceptions.DuplicatedStudyError:
                return None
            holder = {**self.me(), "at": time.time()}
            self.storage.set_study_user_attr(study_id, "holder", holder)
        return Claim(stage, generation, study_id, holder, None, 0)

    def alive(self, claim: Claim, seen: dict[tuple[int, int], float]) -> bool:
        """Whether ``claim``'s holder still works: its pid runs (on this machine), or its
        heartbeat moved within ``stale`` seconds of this process's first sight of it
        (``seen`` keeps those sightings between calls)."""
        holder = claim.holder
        if not holder:  # being claimed this very moment
            return True
        if holder.get("host") == socket.gethostname():
            return pid_alive(int(holder.get("pid", -1)))
        first = seen.setdefault((claim.generation, claim.beat), time.monotonic())
        return time.monotonic() - first < self.stale

    def settle(
        self, stage: str, *, redo: bool = True, force: bool = False, wait: bool = True
    ) -> tuple[Claim | None, bool]:
        """Hold ``stage``, or learn who did it; returns ``(claim, mine)``.

        ``mine`` True: this process holds ``claim`` and must run the stage, then
        :meth:`finish` it. False: another process ran it (``claim.done`` says what came
        of it) or, with ``wait`` False, runs it now (``claim.done`` None; the claim is None
        when another process claimed it a moment ago).

        A claim made before this process started (:attr:`started`), by a run in this very
        directory, is one of this directory's earlier runs: with ``redo`` it is run again
        (a new generation). ``force`` runs the stage again whatever was done.
        """
        seen: dict[tuple[int, int], float] = {}
        waiting = False
        while True:
            claim = self.latest(stage)
            if claim is None:
                generation = 1
            elif force or (redo and claim.done is not None and self._earlier_here(claim)):
                generation = claim.generation + 1
            elif claim.done is not None:
                return claim, False
            elif not self.alive(claim, seen):
                self.log(f"{stage}: {claim.by} claimed it and stopped; taking it over")
                generation = claim.generation + 1
            elif not wait:
                return claim, False
            else:
                if not waiting:
                    self.log(f"{stage}: waiting for {claim.by}, which holds it")
                    waiting = True
                time.sleep(self.poll)
                continue
            mine = self.take(stage, generation)
            if mine is not None:
                return mine, True
            force = False  # another process claimed it first: it runs the stage
            if not wait:
                return self.latest(stage), False

    def _earlier_here(self, claim: Claim) -> bool:
        name = f"{self._prefix(claim.stage)}{claim.generation}"
        return (
            name in self.started
            and claim.holder.get("out_dir") == self.out_dir
            and claim.holder.get("host") == socket.gethostname()
        )

    @contextmanager
    def holding(self, claim: Claim) -> Iterator[None]:
        """Beat the claim's heartbeat (a thread) while the stage runs."""
        stop = threading.Event()

        def beat() -> None:
            count = 0
            while not stop.wait(self.beat_every):
                count += 1
                try:
                    self.storage.set_study_user_attr(claim.study_id, "beat", count)
                except Exception:  # a lost connection: the stage itself will say so
                    pass

        thread = threading.Thread(target=beat, name=f"autoprune-{claim.stage}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def finish(self, claim: Claim, done: dict[str, Any]) -> None:
        """Record that ``claim``'s stage is done, and what came of it."""
        with uninterrupted():
            self.storage.set_study_user_attr(claim.study_id, "done", {**done, "at": time.time()})
