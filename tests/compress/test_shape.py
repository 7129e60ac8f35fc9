"""The shape space: the projection onto one cost, and the ranking of shapes (no training)."""

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from autoprune.compress.shape import TOLERANCE, Projection, ranked_shapes
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
    assert len(projection._seen) <= 8  # a few costs per shape


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
