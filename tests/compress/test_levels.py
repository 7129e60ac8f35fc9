"""Level arithmetic: tau, the searched level range, refinement steps, the calibration's
start (no training)."""

import pytest

from autoprune import BlockPrune, Compose, FilterPrune, Prune, Quantize
from autoprune.compress.calibration import threshold
from autoprune.compress.preparation import resolve_prior, searched_levels
from autoprune.compress.records import LevelRecord, first_broken_above, interpolate_level
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
    # one drop unknown (or no eps): still halfway
    assert next_level(0.5, 0.6, top=1.0, drops=(0.004, None), eps=0.01) == 0.55
    assert next_level(0.5, 0.6, top=1.0, drops=(0.004, 0.02)) == 0.55


def test_with_both_drops_known_the_step_goes_where_the_line_reaches_eps():
    # the ResNet-10's calibration: 0.25 held at 0.0022, 0.5 broke at 0.0115; a bisection
    # tried 0.375 (0.0042) and 0.4375 (0.0095) before the edge near 0.47
    assert next_level(0.25, 0.5, 1.0, drops=(0.0022, 0.0115), eps=0.01) == 0.45
    # the line's crossing, unclamped: a third of the way
    assert next_level(0.3, 0.6, 1.0, drops=(0.004, 0.022), eps=0.01) == pytest.approx(0.4)
    # never closer than a fifth of the bracket to either end, whatever the noise says
    assert interpolate_level(0.2, 0.0099, 0.3, 0.05, eps=0.01) == pytest.approx(0.22)
    assert interpolate_level(0.2, 0.001, 0.3, 0.0101, eps=0.01) == pytest.approx(0.28)
    # drops that do not rise (noise): halfway
    assert interpolate_level(0.2, 0.012, 0.3, 0.011, eps=0.01) == pytest.approx(0.25)
    # the bracket shrinks every step, to at most 80% of its width
    lo, hi = 0.0, 1.0
    for _ in range(5):
        mid = interpolate_level(lo, 0.0, hi, 1.0, eps=0.999)
        assert lo < mid < hi and hi - mid <= 0.8 * (hi - lo) + 1e-9
        lo = mid


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


def test_the_calibration_steps_by_interpolation_once_it_has_a_bracket(monkeypatch):
    """A drop curve 0.05 * level**2 (eps 0.01: the edge at 0.447). Bisection tries 0.5,
    0.25, 0.375, 0.4375; with the drops it goes from the bracket [0.25, 0.5] to 0.433
    and 0.447, where the edge is."""
    import time
    from types import SimpleNamespace

    from autoprune.compress import calibration as cal
    from autoprune.compress.context import TimeBudget
    from autoprune.compress.options import CalibrationOptions

    def step(ctx, space, scorer, recovery, level, k, steps):
        drop = 0.05 * level**2
        return LevelRecord(level, level, drop, drop <= ctx.eps, proxy_drop=drop), None

    monkeypatch.setattr(cal, "_step", step)
    monkeypatch.setattr(cal, "start_level", lambda ctx, space: 0.0)
    monkeypatch.setattr(cal, "calibration_recovery", lambda *args: object())
    ctx = SimpleNamespace(eps=0.01, log=lambda message: None, recovery=None)
    budget = TimeBudget(time.perf_counter(), None)
    out = cal.calibrate(ctx, None, None, CalibrationOptions(steps=4), None, budget)
    assert out.levels[:2] == [0.5, 0.25]
    assert out.levels[2:] == [pytest.approx(0.4333, abs=1e-4), pytest.approx(0.4467, abs=1e-4)]
    assert out.held == out.levels[-1] and out.held > 0.4375  # past the bisection's 4th step
