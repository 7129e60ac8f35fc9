import threading
import time

import optuna
import pytest

from autoprune.compress.space import SearchSpace, Unit
from autoprune.compress.study import (
    _budget_opens,
    _Interrupts,
    make_sampler,
    open_study,
    pareto_front,
    ranked,
    requeue_interrupted,
    surplus,
)
from autoprune.errors import ConfigError

UNITS = [Unit("a", 8, 0.0, 0.8), Unit("b", 16, 0.2, 0.6)]


def test_offsets_space_maps_level_and_offsets():
    space = SearchSpace(UNITS, "offsets")
    assert space.from_params({"level": 0.5, "offset_000": 0.0, "offset_001": 0.0}) == {
        "a": 0.4,
        "b": 0.4,
    }
    assert space.from_params({"level": 0.5, "offset_000": 0.25, "offset_001": -0.9}) == {
        "a": 0.6,
        "b": 0.2,
    }
    assert space.from_params(space.uniform_params(1.0)) == {"a": 0.8, "b": 0.6}


def test_independent_and_uniform_spaces():
    ind = SearchSpace(UNITS, "independent")
    assert ind.from_params({"s_000": 0.7, "s_001": 0.3}) == {"a": 0.7, "b": 0.3}
    uni = SearchSpace(UNITS, "uniform")
    assert uni.from_params({"level": 0.25}) == {"a": 0.2, "b": 0.3}


def test_space_suggests_within_bounds_and_level_range():
    space = SearchSpace(UNITS, "offsets", level_range=(0.4, 0.6))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        sp = space.suggest(trial)
        assert 0.4 <= trial.params["level"] <= 0.6
        assert all(u.low <= sp[u.name] <= u.high for u in UNITS)
        study.tell(trial, 0.0)
    assert space.contains_level(0.5) and not space.contains_level(0.7)


def test_bad_spaces():
    with pytest.raises(ConfigError, match="search.space: expected one of"):
        SearchSpace(UNITS, "grid")
    with pytest.raises(ConfigError, match=r"search.bounds\['a'\]: expected 0 <= low <= high < 1"):
        SearchSpace([Unit("a", 4, 0.5, 1.0)])
    with pytest.raises(ConfigError, match="no prunable unit"):
        SearchSpace([])
    with pytest.raises(ConfigError, match="unknown sampler 'tpee'"):
        make_sampler("tpee", 0)


@pytest.mark.parametrize("name", ["tpe", "gp", "cmaes", "random"])
def test_samplers(name):
    assert isinstance(make_sampler(name, 0), optuna.samplers.BaseSampler)


def test_study_refuses_a_different_setup(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study, resumed = open_study(url, "s", ["maximize"], make_sampler("tpe", 0), {"eps": 0.01})
    assert not resumed
    _, resumed = open_study(url, "s", ["maximize"], make_sampler("tpe", 0), {"eps": 0.01})
    assert resumed
    with pytest.raises(ConfigError, match="was made for a different setup"):
        open_study(url, "s", ["maximize"], make_sampler("tpe", 0), {"eps": 0.02})
    with pytest.raises(ConfigError, match="cannot open"):
        open_study("nosuchdb://x", "s", ["maximize"], make_sampler("tpe", 0), {})


def test_interrupted_trials_are_run_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study, _ = open_study(url, "s", ["maximize"], make_sampler("random", 0), {})
    trial = study.ask()
    trial.suggest_float("level", 0.0, 1.0)  # left RUNNING, as by a crash
    assert requeue_interrupted(study) == 1
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    again = study.ask()
    assert again.suggest_float("level", 0.0, 1.0) == trial.params["level"]


def _trial(number, values, feasible=True):
    t = optuna.trial.create_trial(
        values=values,
        user_attrs={"values": values, "feasible": feasible},
    )
    t.number = number
    return t


def test_ranking_and_pareto_front():
    trials = [
        _trial(0, [2.0, 5.0]),
        _trial(1, [1.0, 1.0]),
        _trial(2, [3.0, 9.0]),
        _trial(3, [9.0, 0.5], feasible=False),
    ]
    front = pareto_front(trials[:3], ["maximize", "minimize"])
    assert sorted(t.number for t in front) == [0, 1, 2]
    study = optuna.create_study(directions=["maximize", "minimize"])
    for t in trials:
        study.add_trial(t)
    order = [t.number for t in ranked(study, ["maximize", "minimize"])]
    assert order == [2, 0, 1]  # feasible front, best first objective first; 3 is infeasible
    single = optuna.create_study(direction="minimize")
    for t in (_trial(0, [3.0]), _trial(1, [1.0]), _trial(2, [0.5], feasible=False)):
        single.add_trial(optuna.trial.create_trial(value=t.values[0], user_attrs=t.user_attrs))
    assert [t.number for t in ranked(single, ["minimize"])] == [1, 0]


@pytest.mark.parametrize(
    "ahead, opens",
    [(optuna.trial.TrialState.FAIL, True), (optuna.trial.TrialState.COMPLETE, False)],
)
def test_a_trial_beyond_the_budget_waits_for_the_trial_ahead(ahead, opens):
    """One trial per waiting worker: it takes the place of a trial ahead that fails, and is
    pruned once the budget is complete (not a new pruned trial every second)."""
    study = optuna.create_study()
    first, waiting = study.ask(), study.ask()
    assert surplus(waiting, 1) and not surplus(first, 1)
    value = 1.0 if ahead == optuna.trial.TrialState.COMPLETE else None
    threading.Timer(0.3, lambda: study.tell(first, value, state=ahead)).start()
    start = time.monotonic()
    assert _budget_opens(waiting, 1, None, _Interrupts(), poll=0.05) is opens
    assert 0.25 < time.monotonic() - start < 5
    assert len(study.trials) == 2


def test_a_waiting_trial_gives_up_at_the_search_deadline():
    study = optuna.create_study()
    study.ask()
    waiting = study.ask()
    deadline = time.monotonic() + 0.2
    assert _budget_opens(waiting, 1, deadline, _Interrupts(), poll=0.05) is False
    assert time.monotonic() >= deadline


def test_keep_stops_the_study_while_time_for_the_trials_kept_is_left(monkeypatch):
    from autoprune.compress import study as study_module

    clock = iter([0.0, 30.0, 60.0])  # made at 0; trials end at 30 and 60 (30 s each)
    monkeypatch.setattr(study_module.time, "perf_counter", lambda: next(clock))
    keep = study_module._Keep(timeout=100.0, keep=lambda done: 1.0)

    class Study:
        stopped = False

        def stop(self):
            self.stopped = True

    s = Study()
    keep(s, None)  # 70 s left, one trial's 30 s kept: go on
    assert not s.stopped
    keep(s, None)  # 40 s left: one more trial (30 s) would eat into the kept 30 s
    assert s.stopped
