"""The shape space: the projection onto one cost, and the ranking of shapes (no training)."""

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from autoprune.compress.context import TimeBudget
from autoprune.compress.records import LevelRecord
from autoprune.compress.shape import (
    TOLERANCE,
    Projection,
    broken_levels,
    kept,
    ranked_shapes,
    reference,
    reference_shapes,
    too_short,
    trial_seconds,
    width_for,
)
from autoprune.compress.space import SearchSpace, Unit

UNITS = [Unit("a", 64, 0.0, 0.9), Unit("b", 64, 0.0, 0.9), Unit("c", 64, 0.0, 0.9)]
WEIGHTS = {"a": 1.0, "b": 4.0, "c": 2.0}  # what pruning each unit saves


def cost(sparsities):
    """Remaining cost over the original's, falling as any unit is pruned."""
    total = sum(WEIGHTS.values())
    return 1.0 - sum(WEIGHTS[k] * s for k, s in sparsities.items()) / total


@pytest.mark.parametrize(
    "offsets",
    [(0.0, 0.0, 0.0), (0.3, -0.2, 0.1), (-0.35, 0.35, -0.35), (0.2, 0.2, -0.3)],
)
def test_every_shape_is_given_the_target_cost(offsets):
    space = SearchSpace(UNITS, "shape")
    projection = Projection(space, cost, target_level=0.6)
    params = dict(zip(space.offset_keys(), offsets))
    level = projection.level(params)
    got = cost(space.from_params({**params, "level": level}))
    assert projection.target * (1 - TOLERANCE) <= got <= projection.target + 1e-12
    assert len(projection._seen) <= 9  # a few costs per shape, the target level first


def test_the_prior_shape_lands_on_the_target_level():
    space = SearchSpace(UNITS, "shape")
    projection = Projection(space, cost, target_level=0.6)
    assert projection.level(projection.zero()) == pytest.approx(0.6, abs=0.01)
    # a target reached only with every unit at its top: the top level
    assert projection.level(projection.zero(), target=0.05) == 1.0


def test_the_shape_space_has_offsets_and_no_searched_level():
    space = SearchSpace(UNITS, "shape")
    assert "level" not in space.warm_params(0.5)
    assert space.warm_params(0.5) == dict.fromkeys(space.offset_keys(), 0.0)
    assert space.uniform_params(0.5)["level"] == 0.5
    assert space.warm_level(0.99)


def _study(rows):
    study = optuna.create_study(direction="maximize")
    dist = {"offset_000": FloatDistribution(-0.35, 0.35)}
    for accuracy, trial_cost in rows:
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                value=accuracy,
                params={"offset_000": 0.0},
                distributions=dist,
                user_attrs={"accuracy": accuracy, "cost": trial_cost, "level": 0.5},
            )
        )
    return study


def test_shapes_rank_by_accuracy_then_by_cost_and_costlier_ones_are_out():
    study = _study([(0.90, 0.50), (0.95, 0.49), (0.95, 0.45), (0.99, 0.60)])
    order = ranked_shapes(study, target=0.50)
    # trial 3 costs more than the target: its accuracy proves nothing
    assert [t.number for t in order] == [2, 1, 0]
    assert SearchSpace.params_of(order[0])["level"] == 0.5


def test_reference_shapes_are_other_allocations_at_the_target_cost():
    # the prior prunes a most; the "global" allocation prunes b (which saves most) most
    prior = {"a": [0.0, 0.8, 1.0], "b": [0.0, 0.2, 1.0], "c": [0.0, 0.5, 1.0]}
    ranking = {"a": [0.0, 0.2, 1.0], "b": [0.0, 0.8, 1.0], "c": [0.0, 0.5, 1.0]}
    space = SearchSpace(UNITS, "shape", prior=prior)
    projection = Projection(space, cost, target_level=0.5)
    refs = reference_shapes(space, projection, {"uniform": {}, "global": ranking})
    assert list(refs) == ["uniform", "global"]
    other = SearchSpace(UNITS, "uniform", prior=ranking)
    for name, offsets in refs.items():
        assert set(offsets) == set(space.offset_keys())
        plan = space.from_params({**offsets, "level": projection.level(offsets)})
        # the study's trial of this shape costs the target, as every trial does
        assert projection.target * (1 - TOLERANCE) <= cost(plan) <= projection.target + 1e-12
        if name == "global":  # and it is the ranking's plan at that cost
            level = max(
                (lv / 100 for lv in range(101)),
                key=lambda lv: -abs(cost(other.from_params({"level": lv})) - cost(plan)),
            )
            want = other.from_params({"level": level})
            assert all(abs(plan[u] - want[u]) < 0.02 for u in plan), (plan, want)
    assert refs["global"]["offset_001"] > 0.2 and refs["global"]["offset_000"] < -0.35
    assert width_for(refs) > 0.35  # the space is widened to hold them
    # an allocation that is the prior's own shape is no reference
    assert reference_shapes(space, projection, {"same": prior}) == {}


def test_the_references_and_the_prior_are_scored_again_and_their_time_kept():
    def trial(**attrs):
        return create_trial(state=TrialState.COMPLETE, value=0.9, user_attrs=attrs)

    assert reference(trial()) is None
    assert reference(trial(warm_start=0.5)) == "prior"
    assert reference(trial(reference="global")) == "global"
    assert kept(8, references=2) == kept(8) + 2 * 3


def test_a_reference_that_cannot_reach_the_target_cost_is_left_out():
    # an allocation that never prunes unit b (the one that saves most) cannot reach a
    # cost only b's pruning reaches
    space = SearchSpace(UNITS, "shape")
    projection = Projection(space, cost, target_level=0.95)
    never_b = {"a": [0.0, 1.0], "b": [0.0, 0.0], "c": [0.0, 1.0]}
    assert reference_shapes(space, projection, {"never_b": never_b}) == {}


def test_the_prior_shape_and_a_reference_land_exactly_on_their_plans():
    prior = {"a": [0.0, 0.8, 1.0], "b": [0.0, 0.2, 1.0], "c": [0.0, 0.5, 1.0]}
    space = SearchSpace(UNITS, "shape", prior=prior)
    projection = Projection(space, cost, target_level=0.5)
    assert projection.level(projection.zero()) == 0.5  # the target level itself
    refs = reference_shapes(space, projection, {"uniform": {}})
    plan = space.from_params({**refs["uniform"], "level": projection.level(refs["uniform"])})
    assert len(set(plan.values())) == 1  # every unit at the same sparsity: uniform


def test_a_finalist_that_broke_at_the_target_cost_bounds_the_refinement():
    space = SearchSpace(UNITS, "shape")
    space.projection = Projection(space, cost, target_level=0.5)
    calibration = [LevelRecord(0.25, 0.25, 0.0, True), LevelRecord(0.75, 0.7, 0.03, False)]
    prior = space.uniform_params(0.25)  # the calibrated plan: the prior's shape
    assert broken_levels(calibration, space, prior) == [0.75]
    assert broken_levels(calibration, space, prior, target_broke=True) == [0.75, 0.5]
    # another shape: the levels at which it costs what the broken plans cost
    offsets = {"offset_000": 0.3, "offset_001": -0.2, "offset_002": 0.1}
    level = space.projection.level(offsets)
    shaped = broken_levels(calibration, space, {**offsets, "level": level}, target_broke=True)
    assert shaped[0] > level and shaped[1] == level  # its own cost: not above it
    # no projection (another space): the calibration's alone
    plain = SearchSpace(UNITS, "offsets")
    assert broken_levels(calibration, plain, plain.uniform_params(0.25), True) == [0.75]


def test_a_trial_lasts_what_the_study_s_trials_took_else_the_calibration_s_proxy():
    study = optuna.create_study()
    calibration = [
        LevelRecord(0.5, 0.5, 0.02, False, 0.9, 0.04, recovery_seconds=50.0, seconds=58.0),
        LevelRecord(0.25, 0.25, 0.0, True, 0.9, 0.02, recovery_seconds=50.0, seconds=62.0),
        LevelRecord(0.1, 0.1, 0.0, True, proxy_drop=0.01),  # no recovery timed: no proxy time
        # not scored by the proxy (no study could follow): its time is the recovery's
        LevelRecord(0.2, 0.2, 0.0, True, recovery_seconds=50.0, seconds=51.0),
    ]
    assert trial_seconds(study, calibration) == 10.0
    assert trial_seconds(study, []) is None
    dist = {"x": FloatDistribution(0, 1)}
    for seconds in (4.0, 6.0):
        study.add_trial(
            create_trial(
                value=0.9, params={"x": 0.5}, distributions=dist, user_attrs={"seconds": seconds}
            )
        )
    assert trial_seconds(study, calibration) == 5.0


def test_no_study_when_too_few_trials_and_the_refinement_would_not_fit():
    now = [0.0]
    budget = TimeBudget(0.0, timeout=600.0, calibrated=[60.0], clock=lambda: now[0], tail=20)
    keep = kept  # no reference shapes
    # 4 trials keep 6 more for their rung: 10 trials of 20 s, then 2 recoveries of 60 s
    assert too_short(budget, 20.0, keep, refining=True) is None
    now[0] = 600.0 - 20 - 319  # 319 s left: 320 are needed
    why = too_short(budget, 20.0, keep, refining=True)
    assert why is not None and "(about 200 s)" in why and "319 s left" in why
    assert too_short(budget, 20.0, None, refining=False) is None  # 80 + 60 s: fits
    assert too_short(budget, None, keep, refining=True) is None  # unknown: the study runs
    assert too_short(TimeBudget(0.0, None), 1e9, keep, refining=True) is None  # no timeout
