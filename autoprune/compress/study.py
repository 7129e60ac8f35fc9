"""The Optuna study: sampler, accuracy constraint, storage and resume.

The study is seeded; its trials persist in the storage (an Optuna URL, by default a SQLite
file in the run directory) and a study run again with the same name resumes: completed
trials are kept, trials a crash left running are run again, and the budget ``n_trials``
counts completed trials. A trial is feasible when its proxy accuracy drop is at most the
calibrated threshold ``tau`` (an Optuna constraint, ``drop - tau <= 0``).

    >>> make_sampler("tpe", seed=0).__class__.__name__
    'TPESampler'
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from ..errors import ConfigError, SearchError, TrialFault
from ..registry import Registry
from .space import SearchSpace

samplers = Registry("sampler")


# -- samplers ---------------------------------------------------------------------------


def _tpe(seed: int) -> optuna.samplers.BaseSampler:
    # the warm starts count as startup trials, so a few random ones suffice
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8)


def _gp(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=5, warn_independent_sampling=False)


def _cmaes(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.CmaEsSampler(
        seed=seed, n_startup_trials=3, warn_independent_sampling=False
    )


def _random(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


samplers.add("tpe", _tpe)
samplers.add("gp", _gp)
samplers.add("cmaes", _cmaes)
samplers.add("random", _random)

# Samplers that read trial constraints themselves; for the others an infeasible trial's
# value is penalised instead (its true value is kept in the trial's attributes).
CONSTRAINT_AWARE = ("tpe", "gp", "random")


def register_sampler(name: str, factory: Callable[[int], Any]) -> None:
    """Register ``factory(seed) -> optuna sampler`` under ``name``."""
    samplers.add(name, factory)


def list_samplers() -> list[str]:
    """The registered sampler names.

    >>> list_samplers()
    ['cmaes', 'gp', 'random', 'tpe']
    """
    return samplers.names()


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """A seeded sampler by name: ``tpe`` (multivariate, default), ``gp``, ``cmaes``, ``random``."""
    return samplers.get(name)(seed)


# -- study ------------------------------------------------------------------------------


def fingerprint(setup: dict[str, Any]) -> str:
    """A short hash of what a study was made for, to refuse resuming a different setup."""
    text = json.dumps(setup, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# A server database is shared by machines: their trials beat a heartbeat (Optuna's), so a
# trial whose process died anywhere is failed and run again by another (each at most once
# again); on one machine (SQLite, memory) a dead process is seen by its pid instead.
HEARTBEAT_SECONDS, GRACE_SECONDS = 30, 120


def _storage(url: str | None) -> str | optuna.storages.BaseStorage | None:
    if url is None or url.startswith("sqlite"):
        return url
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=1
            ),
        )


def _create(
    storage: str | None,
    study_name: str,
    directions: Sequence[str],
    sampler: optuna.samplers.BaseSampler,
    attempts: int = 5,
) -> optuna.Study:
    """``optuna.create_study(load_if_exists=True)``, tried again a few times: processes that
    open a new database at once race to create its tables, and all but one fail once."""
    for attempt in range(attempts):
        try:
            return optuna.create_study(
                storage=_storage(storage),
                study_name=study_name,
                directions=[str(d) for d in directions],  # type: ignore[misc]
                sampler=sampler,
                load_if_exists=True,
            )
        except ValueError as exc:  # e.g. other directions than the stored study
            raise ConfigError(f"search.storage: cannot open study {study_name!r}: {exc}") from None
        except Exception as exc:  # a bad URL, a locked file, a race to create the tables
            if attempt == attempts - 1:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise ConfigError(f"search.storage: cannot open {storage!r}: {first}") from None
            time.sleep(0.5 + attempt)
    raise AssertionError  # pragma: no cover


def open_study(
    storage: str | None,
    study_name: str,
    directions: Sequence[str],
    sampler: optuna.samplers.BaseSampler,
    setup: dict[str, Any],
) -> tuple[optuna.Study, bool]:
    """Create or load a study; returns ``(study, resumed)``.

    A loaded study must have been made for the same ``setup`` (scheme, units, objectives,
    eps, ...), else the error says to pick another name or directory.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    digest = fingerprint(setup)
    with uninterrupted():
        study = _create(storage, study_name, directions, sampler)
        stored = study.user_attrs.get("fingerprint")
        if stored is None:
            study.set_user_attr("fingerprint", digest)
            study.set_user_attr("setup", json.loads(json.dumps(setup, default=str)))
    resumed = stored is not None
    if resumed and stored != digest:
        raise ConfigError(
            f"search.study: study {study_name!r} in {storage} was made for a different setup "
            "(model, scheme, objectives or eps); choose another study name or output directory"
        )
    if [d.name.lower() for d in study.directions] != list(directions):
        raise ConfigError(f"search.study: study {study_name!r} optimises other directions")
    return study, resumed


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine."""
    if pid <= 0:  # os.kill would signal a whole process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _orphaned(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a RUNNING trial's process is gone: it ran on this machine under a pid that
    no longer runs (or never said which). A trial of another machine's live or dead process
    is left to Optuna's heartbeat (server storages)."""
    worker = str(trial.user_attrs.get("worker", ""))
    host, _, pid = worker.rpartition(":")
    if not worker or not pid.isdigit():
        return True
    if host != socket.gethostname():
        return False
    return not pid_alive(int(pid))


def requeue_interrupted(study: optuna.Study) -> int:
    """Re-run the trials a crash left RUNNING (:func:`_orphaned`): enqueue their parameters,
    mark them failed. Trials that other live processes are scoring are left alone."""
    count = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _orphaned(t):
            continue
        with uninterrupted():
            if t.params:
                attrs: dict[str, Any] = {"requeued_from": t.number}
                for label in ("warm_start", "reference"):  # what the trial stood for
                    if label in t.user_attrs:
                        attrs[label] = t.user_attrs[label]
                study.enqueue_trial(dict(t.params), user_attrs=attrs, skip_if_exists=False)
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        count += 1
    return count


@dataclass
class TrialOutcome:
    """What evaluating one candidate produced."""

    values: list[float]  # objective values, as ratios to the original model
    accuracy: float
    drop: float
    feasible: bool
    attrs: dict[str, Any]


def worker_id() -> str:
    """This process, as a study's trials record who scored them: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def surplus(trial: optuna.Trial, n_trials: int | None) -> bool:
    """Whether ``n_trials`` are already complete or under way in trials numbered before
    this one: in a study several workers share, the first ``n_trials`` to start take the
    budget, so the study ends with exactly that many complete."""
    if n_trials is None:
        return False
    states = (TrialState.COMPLETE, TrialState.RUNNING)
    ahead = sum(
        1
        for t in trial.study.get_trials(deepcopy=False, states=states)
        if t.state == TrialState.COMPLETE or t.number < trial.number
    )
    return ahead >= n_trials


def _budget_opens(
    trial: optuna.Trial,
    n_trials: int | None,
    deadline: float | None,
    interrupts: _Interrupts,
    poll: float = 1.0,
) -> bool:
    """Wait while ``trial`` is beyond the budget: True if a trial ahead of it failed (it
    then takes that place), False once the budget is complete, the search's time is up,
    or Ctrl-C was pressed. Trials of workers that died are failed meanwhile, where the
    storage keeps heartbeats, so that a dead worker's place opens too."""
    study, states = trial.study, (TrialState.COMPLETE,)
    while not interrupts.requested:
        complete = len(study.get_trials(deepcopy=False, states=states))
        if n_trials is not None and complete >= n_trials:
            return False
        if deadline is not None and time.monotonic() >= deadline:
            return False
        with interrupts.stoppable():
            time.sleep(poll)
        with warnings.catch_warnings():  # Ctrl-C is held here, outside stoppable()
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        if not surplus(trial, n_trials):
            return True
    return False


def _objective(
    space: SearchSpace,
    evaluate: Callable[[dict[str, float]], TrialOutcome],
    tau: float,
    directions: Sequence[str],
    penalise: bool,
    n_trials: int | None = None,
    interrupts: _Interrupts | None = None,
    deadline: float | None = None,
    accuracy: bool = False,
) -> Callable[[optuna.Trial], float | list[float]]:
    """The function Optuna calls per trial: suggest, evaluate, record, return the values
    (``accuracy``: the proxy accuracy instead, for a study of plans of equal cost).

    The drop over ``tau`` is the trial's constraint (none for an infinite ``tau``); with
    ``penalise`` (samplers that do not read constraints), an infeasible trial's values are
    worsened by how far it is over.
    A trial beyond the budget (:func:`surplus`) waits for the budget to be complete and
    is then pruned unscored (one such trial per waiting worker), or is scored if a trial
    ahead of it fails. Only the scoring and the waiting may be stopped by Ctrl-C at once
    (``interrupts``); never a write to the storage.
    """
    interrupts = interrupts or _Interrupts()

    def objective(trial: optuna.Trial) -> float | list[float]:
        if surplus(trial, n_trials) and not _budget_opens(trial, n_trials, deadline, interrupts):
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned("the trial budget is taken by other workers")
        sparsities = space.suggest(trial)
        trial.set_user_attr("sparsities", sparsities)
        trial.set_user_attr("worker", worker_id())
        try:
            with interrupts.stoppable():
                out = evaluate(sparsities)
        except TrialFault as fault:  # recorded as failed, with the reason; the search goes on
            trial.set_user_attr("fault", str(fault))
            return float("nan") if len(directions) == 1 else [float("nan")] * len(directions)
        trial.set_user_attr("accuracy", out.accuracy)
        trial.set_user_attr("drop", out.drop)
        trial.set_user_attr("feasible", out.feasible)
        trial.set_user_attr("values", out.values)
        for k, v in out.attrs.items():
            trial.set_user_attr(k, v)
        if accuracy:
            return out.accuracy
        if math.isfinite(tau):
            trial.set_constraint("accuracy_drop", out.drop - tau)
        values = list(out.values)
        if penalise and not out.feasible:
            excess = 1.0 + 10.0 * (out.drop - tau)
            values = [
                v / excess if d == "maximize" else v * excess for v, d in zip(values, directions)
            ]
        return values[0] if len(values) == 1 else values

    return objective


_held: list[bool] = []  # non-empty while the main thread holds Ctrl-C


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold Ctrl-C until the block is done, then raise it: for writes to the study's
    storage outside the trials (opening the study, the preparation, claims), which a
    KeyboardInterrupt inside a database commit would leave half done, with a traceback.

        >>> with uninterrupted():
        ...     pass
    """
    if threading.current_thread() is not threading.main_thread() or _held:
        yield  # not the thread signals reach, or already held by an enclosing block
        return
    caught: list[int] = []
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    _held.append(True)
    try:
        yield
    finally:
        _held.clear()
        signal.signal(
            signal.SIGINT, previous if previous is not None else signal.default_int_handler
        )
    if caught:
        raise KeyboardInterrupt


class _Interrupts:
    """Ctrl-C during the trials, taken where it is safe: inside a trial's scoring it stops
    the trial at once (Optuna records it as failed); during Optuna's own bookkeeping (a
    write to the storage) it is held until the trial is recorded, then stops the study."""

    def __init__(self) -> None:
        self.requested = False
        self.in_trial = False
        self.previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        if self.in_trial:
            raise KeyboardInterrupt

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        if self.requested and exc[0] is None:
            raise KeyboardInterrupt

    @contextmanager
    def stoppable(self) -> Iterator[None]:
        """A region that Ctrl-C may stop at once (scoring: no storage write inside)."""
        if self.requested:
            raise KeyboardInterrupt
        self.in_trial = True
        try:
            yield
        finally:
            self.in_trial = False


class _Failures:
    """Failed trials in a row: past ``limit``, the study stops and :meth:`check` raises."""

    def __init__(self, limit: int, log: Callable[[str], None] | None) -> None:
        self.limit, self.log = limit, log
        self.reasons: list[str] = []

    def count(self, study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> bool:
        """Whether ``frozen`` failed (then logged, and the study stopped at the limit)."""
        if frozen.state != TrialState.FAIL:
            self.reasons.clear()
            return False
        self.reasons.append(str(frozen.user_attrs.get("fault", "the objective failed")))
        if self.log is not None:
            self.log(f"trial {frozen.number:3d}: failed: {self.reasons[-1]}")
        if len(self.reasons) >= self.limit:
            study.stop()
        return True

    def check(self) -> None:
        if len(self.reasons) >= self.limit:
            raise SearchError(
                f"search: {len(self.reasons)} trials in a row failed (the last: "
                f"{self.reasons[-1]}); check the data, the learning rates "
                "(search.evaluation.finetune_lr) and the model, or raise search.max_failures"
            )


class _Keep:
    """A callback that stops the study when another trial would leave less than
    ``keep(trials done)`` mean trials' time of ``timeout`` seconds (from its making). A
    trial's time is the wall time between trials (the sampler's, the scoring's and the
    storage's together)."""

    def __init__(self, timeout: float, keep: Callable[[int], float]) -> None:
        self.start = time.perf_counter()
        self.end, self.keep, self.trials = self.start + timeout, keep, 0

    def __call__(self, study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        self.trials += 1
        now = time.perf_counter()
        if self.end - now < (self.keep(self.trials) + 1) * (now - self.start) / self.trials:
            study.stop()  # another trial would eat into the time kept


def _optimize(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    timeout: float | None,
    callbacks: list[Any],
    interrupts: _Interrupts,
) -> None:
    """``study.optimize`` until a callback stops it (failed trials do not use up the
    budget), Ctrl-C taken where it is safe, Optuna's own per-trial warnings quiet (failed
    trials are logged by the callbacks)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with interrupts:
            study.optimize(
                objective,
                n_trials=None,  # MaxTrialsCallback counts completed trials
                timeout=timeout,
                callbacks=callbacks,
                catch=(),
                gc_after_trial=False,
            )
    finally:
        optuna.logging.set_verbosity(verbosity)


def _enqueue(
    study: optuna.Study,
    space: SearchSpace,
    warm_start: Sequence[float],
    references: Mapping[str, Mapping[str, float]],
) -> None:
    with uninterrupted():
        for level in warm_start:
            if space.warm_level(level):
                params = space.warm_params(level)
                study.enqueue_trial(params, user_attrs={"warm_start": level}, skip_if_exists=True)
        for name, offsets in references.items():
            study.enqueue_trial(dict(offsets), user_attrs={"reference": name}, skip_if_exists=True)


def run_trials(
    study: optuna.Study,
    space: SearchSpace,
    evaluate: Callable[[dict[str, float]], TrialOutcome],
    *,
    n_trials: int | None,
    timeout: float | None,
    tau: float,
    directions: Sequence[str],
    sampler_name: str,
    warm_start: Sequence[float] = (),
    references: Mapping[str, Mapping[str, float]] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    describe: Callable[[optuna.trial.FrozenTrial], str] | None = None,
    max_failures: int = 5,
    accuracy: bool = False,
    keep: Callable[[int], float] | None = None,
) -> None:
    """Run trials until ``n_trials`` are complete (in all) or ``timeout`` seconds pass,
    less ``keep(trials done)`` times the mean trial's duration (kept for what follows).
    ``accuracy``: the study maximises the proxy accuracy instead of the objectives.
    A new study enqueues the ``warm_start`` levels first, then the ``references``
    (parameters by name, kept in each trial's ``reference`` attribute).

    A trial is feasible when its proxy drop is at most ``tau``; samplers that do not
    read constraints see an infeasible trial's values penalised by how far it is over.
    A candidate that breaks (:class:`~autoprune.errors.TrialFault`) fails its trial, with
    the reason in its ``fault`` attribute; ``max_failures`` failures in a row stop the
    search with a :class:`~autoprune.errors.SearchError`.
    """
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if not study.trials:
        _enqueue(study, space, warm_start, references or {})
    remaining = None if n_trials is None else max(0, n_trials - done)
    if remaining == 0:
        return
    bar = tqdm(total=remaining, desc="search", disable=not progress, leave=False, unit="trial")
    interrupts = _Interrupts()
    objective = _objective(
        space,
        evaluate,
        tau,
        directions,
        penalise=sampler_name not in CONSTRAINT_AWARE,
        n_trials=n_trials,
        interrupts=interrupts,
        deadline=None if timeout is None else time.monotonic() + timeout,
        accuracy=accuracy,
    )

    failures = _Failures(max_failures, log)

    def after(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        if interrupts.requested:
            study.stop()
        if frozen.state == TrialState.PRUNED or failures.count(study, frozen):
            return
        bar.update(1)
        if log is not None and describe is not None:
            log(describe(frozen))

    start = time.perf_counter()
    callbacks: list[Any] = [after]
    if keep is not None and timeout is not None:
        callbacks.append(_Keep(timeout, keep))
    if n_trials is not None:
        callbacks.append(optuna.study.MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE,)))
    try:
        _optimize(study, objective, timeout, callbacks, interrupts)
    finally:
        bar.close()
    failures.check()
    if log is not None:
        log(
            f"search: {len(study.trials)} trials in the study, "
            f"{time.perf_counter() - start:.0f} s this run"
        )


def feasible_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("feasible")
    ]


def ranked(study: optuna.Study, directions: Sequence[str]) -> list[optuna.trial.FrozenTrial]:
    """Feasible trials, best first.

    One objective: by its value. Several: the feasible Pareto front first, ordered by the
    first objective (the stated rule: of the non-dominated models, the one best in the
    first objective is chosen), then the other feasible trials by the first objective.
    """
    trials = feasible_trials(study)
    sign = [1.0 if d == "maximize" else -1.0 for d in directions]

    def key(t: optuna.trial.FrozenTrial) -> tuple:
        vals = t.user_attrs["values"]
        return tuple(-s * v for s, v in zip(sign, vals))

    if len(directions) == 1:
        return sorted(trials, key=key)
    front = pareto_front(trials, directions)
    ids = {t.number for t in front}
    return sorted(front, key=key) + sorted([t for t in trials if t.number not in ids], key=key)


def pareto_front(
    trials: Sequence[optuna.trial.FrozenTrial], directions: Sequence[str]
) -> list[optuna.trial.FrozenTrial]:
    """Non-dominated trials by their (true) objective values."""
    sign = [1.0 if d == "maximize" else -1.0 for d in directions]

    def vals(t):
        return [s * v for s, v in zip(sign, t.user_attrs["values"])]

    front = []
    for t in trials:
        a = vals(t)
        dominated = any(
            all(b_i >= a_i for a_i, b_i in zip(a, vals(o)))
            and any(b_i > a_i for a_i, b_i in zip(a, vals(o)))
            for o in trials
            if o is not t
        )
        if not dominated:
            front.append(t)
    return front


def pareto_numbers(order: list[optuna.trial.FrozenTrial], directions: list[str]) -> list[int]:
    """Trial numbers of the feasible Pareto front (several objectives; none for one)."""
    if len(directions) < 2:
        return []
    return [tr.number for tr in pareto_front(order, directions)]


def describe_trial(trial: optuna.trial.FrozenTrial) -> str:
    """One log line per trial."""
    a = trial.user_attrs
    if "accuracy" not in a:
        return f"trial {trial.number}: {trial.state.name.lower()}"
    sp = list(a.get("sparsities", {}).values())
    mean = sum(sp) / len(sp) if sp else 0.0
    objs = ", ".join(f"{k} {v:.3g}x" for k, v in a.get("objectives", {}).items())
    tag = "feasible" if a.get("feasible") else "infeasible"
    warm = " (warm start)" if "warm_start" in a else ""
    if a.get("reference") is not None:
        warm = f" ({a['reference']} shape)"
    return (
        f"trial {trial.number:3d}{warm}: sparsity mean {mean:.2f} "
        f"[{min(sp, default=0):.2f}-{max(sp, default=0):.2f}] | "
        f"val {a['accuracy']:.4f} (drop {a['drop']:+.4f}) | {objs} | {tag} | "
        f"{a.get('seconds', 0):.1f} s"
    )


def trial_row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial as ``result.trials`` and ``trials.csv`` hold it."""
    a = trial.user_attrs
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "feasible": a.get("feasible"),
        "accuracy": a.get("accuracy"),
        "drop": a.get("drop"),
        "seconds": a.get("seconds"),
        "objectives": a.get("objectives", {}),
        "sparsities": a.get("sparsities", {}),
        "physical": a.get("physical"),
        "warm_start": a.get("warm_start"),
        "reference": a.get("reference"),
        "fault": a.get("fault"),
    }
