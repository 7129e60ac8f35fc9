import math

import numpy as np
import pytest
import torch

import autoprune as ap
from autoprune import objectives as O
from autoprune.compress.allocation import Curve, allocation_prior
from autoprune.compress.sensitivity import TooSlow, analyze
from autoprune.compress.space import SearchSpace, Unit


def test_a_curve_is_made_monotone_and_extended_along_its_last_slope():
    curve = Curve([0.25, 0.5, 0.75], drops=[0.02, -0.01, 0.1], savings=[1.0, 2.0, 3.0])
    drops, savings = curve.at(np.array([0.0, 0.25, 0.5, 0.75, 1.0]))
    # the noisy dip at 0.5 is lifted to 0.02; past 0.75, the last slope goes on
    assert drops.tolist() == pytest.approx([0.0, 0.02, 0.02, 0.1, 0.18])
    assert savings.tolist() == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])


def _units_and_curves():
    units = [Unit("free", 32, 0.0, 0.9), Unit("fragile", 32, 0.0, 0.9), Unit("plain", 32)]
    curves = {  # "free" saves much and loses nothing; "fragile" saves little, loses much
        "free": Curve([0.25, 0.5, 0.75, 0.9], [0.0, 0.0, 0.005, 0.01], [3, 6, 9, 11]),
        "fragile": Curve([0.25, 0.5, 0.75, 0.9], [0.05, 0.2, 0.5, 0.8], [1, 2, 3, 3.5]),
    }
    return units, curves


def test_the_prior_prunes_what_saves_much_and_loses_little_first():
    units, curves = _units_and_curves()
    prior = allocation_prior(units, curves, points=21)
    assert set(prior) == {"free", "fragile"}  # "plain" has no curve: it stays uniform
    for table in prior.values():
        assert len(table) == 21 and table[0] == 0.0 and table[-1] == 1.0
        assert all(b >= a for a, b in zip(table, table[1:]))  # monotone in the level
    for k in range(1, 20):  # the mean position is the level; "free" carries it
        level = k / 20
        assert (prior["free"][k] + prior["fragile"][k]) / 2 == pytest.approx(level, abs=0.02)
        assert prior["free"][k] >= prior["fragile"][k]
    assert prior["free"][8] == 0.8 and prior["fragile"][8] == 0.0
    # in a search space the prior sets the units' sparsities at each level
    space = SearchSpace(units, "uniform", prior=prior)
    assert space.from_params({"level": 0.4}) == {"free": 0.72, "fragile": 0.0, "plain": 0.36}


def _sensitivity_run(**kwargs):
    """A search with the sensitivity prior, on a small CNN trained on digits."""
    data = ap.load_data("digits", seed=0)
    torch.manual_seed(0)
    model = ap.create_model("small_cnn", data.num_classes, data.input_shape, width=8)
    ap.train(model, data.loaders(64, seed=0).train, epochs=8, seed=0)
    options = dict(
        scheme=ap.FilterPrune(),
        data=data,
        n_trials=3,
        recovery=ap.FineTune(epochs=0.5),
        proxy=ap.ProxyOptions(finetune_epochs=0.2, bn_batches=4),
        calibration=ap.CalibrationOptions(steps=2),
        sensitivity=ap.SensitivityOptions(levels=(0.5, 0.9), finetune_steps=2, val_batches=2),
        prior="sensitivity",
        refine=0,
        batch_size=64,
        progress=False,
    )
    return ap.Compressor(model.eval(), O.Minimize(O.macs), 0.05, **(options | kwargs)).run()


@pytest.mark.slow
def test_a_search_with_the_sensitivity_prior_calibrates_along_it():
    result = _sensitivity_run()
    assert result.settings["prior"] == "sensitivity" and "sensitivity" in result.phases
    assert result.settings["prior_used"] == "sensitivity"
    assert result.settings["sensitivity"]  # the analysis is stored with the run
    # a calibration plan is not uniform: the prior spread its level
    first = next(t for t in result.trials if t["warm_start"] is not None)
    assert len(set(first["sparsities"].values())) > 1
    assert result.feasible and result.after["macs"] < result.before["macs"]


def test_an_analysis_stops_after_its_first_evaluation_when_it_would_pass_its_limit(
    monkeypatch,
):
    data = ap.load_data("digits", seed=0)
    model = ap.create_model("mlp", data.num_classes, data.input_shape, hidden=(32, 16))
    options = ap.SensitivityOptions(levels=(0.5, 0.75), bn_batches=1, finetune_steps=1)
    calls, units = [], []

    def accuracy(m, loader):
        calls.append(m)
        return ap.evaluate(m, loader).accuracy

    def run(limit):
        calls.clear()
        units.clear()
        return analyze(
            model,
            ap.Prune(),
            data.loaders(64),
            data.example_input(),
            options,
            accuracy=accuracy,
            limit=limit,
            log=units.append,
        )

    with pytest.raises(TooSlow, match=r"about \d+ s, over the 0 s it may take") as slow:
        run(0.0)
    # the base and one pruned copy evaluated, then stopped: no unit finished
    assert len(calls) == 2 and units == [] and slow.value.projected > 0
    # a closer call (here: the first evaluation given any margin) waits for a whole unit
    monkeypatch.setattr("autoprune.compress.sensitivity.FIRST_MARGIN", math.inf)
    with pytest.raises(TooSlow):
        run(0.0)
    assert len(calls) == 3 and len(units) == 1  # the base, then the first unit's two levels
    assert sorted(run(60.0).accuracy) == ["fc1", "fc2"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "scheme, fallback", [(ap.FilterPrune(), "uniform"), (ap.Prune(), "global")], ids=str
)
def test_a_sensitivity_prior_that_would_not_fit_the_timeout_gives_way_to_auto(
    monkeypatch, scheme, fallback
):
    # an analysis only for the prior may take a share of the timeout; past it, the run
    # goes on with the scheme's auto prior (uniform for channels, global for weights)
    # and says so
    monkeypatch.setattr("autoprune.compress.preparation.SENSITIVITY_SHARE", 1e-6)
    result = _sensitivity_run(
        scheme=scheme, proxy=ap.ProxyOptions(finetune_epochs=0.0, bn_batches=4), timeout=600
    )
    note = next(n for n in result.notes if n.startswith("prior: the sensitivity analysis"))
    assert f"the {fallback} prior was used instead" in note
    assert result.settings["prior"] == "sensitivity"  # as given
    assert result.settings["prior_used"] == fallback
    assert not result.settings["sensitivity"]  # no analysis was kept
    first = next(t for t in result.trials if t["warm_start"] is not None)
    # uniform: one sparsity for all units; global: the magnitude ranking's spread
    assert (len(set(first["sparsities"].values())) == 1) is (fallback == "uniform")
    assert result.feasible
