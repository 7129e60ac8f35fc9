"""The time budget's arithmetic, on a fake clock (no training)."""

import pytest

from autoprune.compress.context import TimeBudget


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_estimate_is_this_runs_mean_else_the_calibrations():
    budget = TimeBudget(0.0, 1000.0, calibrated=[100.0, 200.0], clock=Clock(0.0))
    assert budget.estimate() == 150.0
    budget.record(60.0)
    budget.record(80.0)
    assert budget.estimate() == 70.0
    assert TimeBudget(0.0, None).estimate() == 0.0


def test_fits_counts_recoveries_up_to_the_deadline():
    clock = Clock(100.0)
    budget = TimeBudget(50.0, 300.0, calibrated=[100.0], clock=clock)
    assert budget.deadline == 350.0 and budget.elapsed() == 50.0
    assert budget.fits(2) and not budget.fits(3)  # 100 + 2*100 <= 350 < 100 + 3*100
    clock.now = 251.0
    assert not budget.fits()
    assert TimeBudget(0.0, None, clock=clock).fits(1000)


def test_fits_counts_the_next_recovery_at_the_slowest_so_far():
    # the mean is 180 s, but one took 230 s: at 900 - 200 s left, a 180-s recovery would
    # fit and a 230-s one would not (a densenet run once ended 65 s past its timeout so)
    budget = TimeBudget(0.0, 900.0, clock=Clock(700.0))
    for seconds in (150.0, 160.0, 230.0, 180.0):
        budget.record(seconds)
    assert budget.estimate() == 180.0 and budget.longest() == 230.0
    assert budget.need(2) == 410.0 and budget.need(0) == 0.0
    assert not budget.fits()
    budget.clock = Clock(600.0)
    assert budget.fits() and not budget.fits(2)  # 600 + 230 <= 900 < 600 + 230 + 180
    assert budget.fits(0) and TimeBudget(0.0, 900.0).longest() == 0.0


def test_reserve_keeps_one_or_two_recoveries_at_most_35_percent():
    budget = TimeBudget(0.0, 1000.0, calibrated=[100.0], clock=Clock(0.0))
    assert budget.reserve(refining=False) == 100.0
    assert budget.reserve(refining=True) == 200.0
    budget.record(400.0)
    assert budget.reserve(refining=True) == pytest.approx(350.0)
    assert TimeBudget(0.0, None).reserve(True) == 0.0


def test_trials_timeout_is_what_is_left_less_the_reserve():
    budget = TimeBudget(0.0, 1000.0, calibrated=[100.0], clock=Clock(300.0))
    assert budget.trials_timeout(refining=True) == 500.0
    assert TimeBudget(0.0, 100.0, calibrated=[90.0], clock=Clock(99.0)).trials_timeout(True) == 1.0
    assert TimeBudget(0.0, None).trials_timeout(True) is None


def test_the_tail_is_kept_for_the_final_measurement():
    clock = Clock(0.0)
    budget = TimeBudget(0.0, 1000.0, calibrated=[100.0], clock=clock, tail=60.0)
    assert budget.deadline == 940.0
    clock.now = 830.0
    assert budget.fits(1) and not budget.fits(1, extra=20.0)  # 950 > 940
    assert budget.trials_timeout(False) == 1000.0 - 60.0 - 830.0 - 100.0
