"""Level arithmetic: tau, the searched level range, refinement steps, the calibration's
start (no training)."""

import pytest

from autoprune import BlockPrune, Compose, FilterPrune, Prune, Quantize
from autoprune.compress.calibration import threshold
from autoprune.compress.preparation import resolve_prior, searched_levels
from autoprune.compress.records import LevelRecord, first_broken_above
from autoprune.compress.refinement import next_level


def rec(level, holds, proxy_drop):
    return LevelRecord(level, level, 0.0 if holds else 0.05, holds, proxy_drop=proxy_drop)


def test_tau_is_halfway_to_the_first_broken_plan_above_and_never_below_eps():
    records = [rec(0.5, True, 0.02), rec(0.75, False, 0.10), rec(0.625, True, 0.04)]
    assert threshold(records, eps=0.01) == pytest.approx(0.04 + (0.10 - 0.04) / 2)
    assert threshold(records, eps=0.2) == 0.2
    assert threshold([rec(0.5, True, 0.03)], eps=0.01) == 0.03  # nothing broke above
    assert threshold([rec(0.5, False, 0.3)], eps=0.01) == 0.01  # nothing held
    # a broken plan whose proxy drop is lower cannot lower tau
    assert threshold([rec(0.5, True, 0.05), rec(0.75, False, 0.02)], eps=0.01) == 0.05


def test_first_broken_above():
    records = [rec(0.5, True, 0), rec(0.875, False, 0), rec(0.75, False, 0), rec(0.25, False, 0)]
    assert first_broken_above(records, 0.5).level == 0.75
    assert first_broken_above(records, 0.9) is None


def test_searched_levels_start_below_the_held_level_and_end_past_the_broken_one():
    assert searched_levels(0.5, 0.75) == (0.35, 0.8)
    assert searched_levels(0.9, None) == (0.75, 1.0)
    assert searched_levels(0.1, None) == (0.0, 0.4)
    assert searched_levels(None, None) == (0.0, 1.0)


def test_refinement_steps_a_quarter_up_then_bisects():
    assert next_level(0.5, None, top=1.0) == 0.625
    assert next_level(0.5, 0.6, top=1.0) == 0.55
    assert next_level(0.1, None, top=0.5) == 0.2


def test_scheme_knowledge_lives_on_the_schemes():
    assert Prune.calibration_start == 0.75 and BlockPrune.calibration_start == 0.5
    assert FilterPrune.calibration_start == 0.0
    assert (Prune.search_high, BlockPrune.search_high, FilterPrune.search_high) == (
        0.995,
        0.95,
        0.9,
    )
    assert FilterPrune.sensitivity_cap == 0.95 and BlockPrune.sensitivity_cap == 0.98
    assert not hasattr(Quantize(), "sparsity")


def test_the_prior_is_global_for_layerwise_unstructured_pruning_only():
    assert resolve_prior("auto", Prune()) == "global"
    assert resolve_prior("auto", Compose([Prune(), Quantize()])) == "global"
    assert resolve_prior("auto", Prune(scope="global")) == "uniform"
    assert resolve_prior("auto", FilterPrune()) == "uniform"
    assert resolve_prior("uniform", Prune()) == "uniform"
