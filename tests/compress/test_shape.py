"""The shape space: the projection onto one cost, and the ranking of shapes (no training)."""

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from autoprune.compress.shape import (
    TOLERANCE,
    Projection,
    kept,
    ranked_shapes,
    reference,
    reference_shapes,
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
