"""Finalist selection: a pure function of the ranked trials (no training)."""

from autoprune.compress.finalists import Candidate, select
from autoprune.compress.space import plan_key

A = Candidate(5, {"u": 0.9})
B = Candidate(3, {"u": 0.8})
HELD = Candidate(1, {"u": 0.7}, warm_start=0.75)
LOWER = Candidate(0, {"u": 0.5}, warm_start=0.5)


def labels(finalists):
    return [a.label for a in finalists.attempts]


def test_best_first_then_scaled_down_copies_of_the_best():
    chosen = select([A, B, LOWER], recovered=set(), noisy=False, max_attempts=4)
    assert labels(chosen) == [
        "trial 5",
        "trial 3",
        "trial 0",
        "trial 5 at 0.8x its sparsity",
        "trial 5 at 0.6x its sparsity",
    ]
    assert not chosen.fallback
    assert chosen.attempts[3].sparsities == {"u": 0.72}
    assert chosen.attempts[3].number is None


def test_max_attempts_keeps_one_place_for_the_calibrated_plan():
    # two places for searched plans, the calibrated plan last: nothing below it
    order = [A, B, Candidate(2, {"u": 0.75}), HELD, LOWER]
    chosen = select(order, recovered={plan_key(HELD.sparsities)}, noisy=False, max_attempts=3)
    assert labels(chosen)[:3] == ["trial 5", "trial 3", "trial 1"]
    assert chosen.fallback


def test_a_timing_skips_held_plans_less_pruned_than_the_most_pruned_held_one():
    recovered = {plan_key(HELD.sparsities), plan_key(LOWER.sparsities)}
    # noise ranked the less pruned held plan first: with a timing it is skipped
    noisy = select([LOWER, HELD], recovered, noisy=True, max_attempts=4)
    assert labels(noisy)[0] == "trial 1" and noisy.fallback
    exact = select([LOWER, HELD], recovered, noisy=False, max_attempts=4)
    assert labels(exact)[0] == "trial 0" and exact.fallback


def test_no_feasible_trial_means_no_attempt():
    chosen = select([], recovered=set(), noisy=False, max_attempts=4)
    assert chosen.attempts == [] and not chosen.fallback
