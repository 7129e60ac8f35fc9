import copy

import optuna
import pytest
import torch

import autoprune as ap
from autoprune import objectives as O
from autoprune.compress import CompressionResult
from autoprune.compress.context import TimeBudget
from autoprune.errors import ConfigError, FinalizedElsewhere, SearchError

pytestmark = pytest.mark.slow  # every test here runs a search


@pytest.fixture(scope="module")
def data():
    return ap.load_data("digits", seed=0)


@pytest.fixture(scope="module")
def trained(data):
    torch.manual_seed(0)
    model = ap.create_model("small_cnn", data.num_classes, data.input_shape, width=8)
    ap.train(model, data.loaders(64, seed=0).train, epochs=8, seed=0)
    return model.eval()


FAST = ap.ProxyOptions(finetune_epochs=0.5, bn_batches=5)
NO_CALIBRATION = ap.CalibrationOptions(enabled=False)


def compressor(model, data, **kw):
    args = dict(
        scheme=ap.FilterPrune(),
        data=data,
        n_trials=6,
        out_dir=None,
        recovery=ap.FineTune(epochs=2),
        proxy=FAST,
        calibration=NO_CALIBRATION,
        batch_size=64,
        progress=False,
    )
    args.update(kw)
    return ap.Compressor(
        model,
        kw.pop("objective", O.Minimize(O.macs)),
        args.pop("eps", 0.05),
        **{k: v for k, v in args.items() if k not in ("objective", "eps")},
    )


def test_result_respects_eps_and_is_physical(trained, data):
    before = copy.deepcopy(trained.state_dict())
    result = compressor(trained, data, eps=0.03).run()
    assert result.feasible
    assert result.before["val_accuracy"] - result.after["val_accuracy"] <= 0.03
    assert result.after["macs"] < result.before["macs"]
    assert result.plan.physical and result.chosen_trial is not None
    chosen = next(t for t in result.trials if t["number"] == result.chosen_trial)
    assert chosen["feasible"]
    assert set(result.phases) >= {"baseline", "search", "recovery", "measure", "total"}
    assert isinstance(result.study, optuna.Study)
    # the input model is untouched
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())


def test_a_model_that_breaks_eps_is_never_a_success(trained, data):
    full = ap.metrics.count_params(trained).nonzero

    def strict(model, loader):  # any pruning at all counts as losing all accuracy
        return 1.0 if ap.metrics.count_params(model).nonzero >= full else 0.0

    result = compressor(trained, data, eps=0.01, accuracy=strict, n_trials=3).run()
    assert not result.feasible
    assert "no candidate of the search kept accuracy" in result.notes[0]
    assert "original model is returned" in result.notes[-1]
    assert ap.metrics.count_params(result.model) == ap.metrics.count_params(trained)


def test_recovery_backs_off_then_gives_up(trained, data):
    calls = []

    def fickle(model, loader):  # fine during the search, never after recovery
        calls.append(1)
        return 1.0 if len(calls) <= 3 + 3 else 0.0  # baseline (3) and 3 candidates

    result = compressor(trained, data, eps=0.01, accuracy=fickle, n_trials=3).run()
    assert not result.feasible
    backoffs = [n for n in result.notes if "backing off" in n]
    assert len(backoffs) == 4  # max_attempts: the three best, then lower sparsity
    assert "at 0.8x its sparsity" in backoffs[-1]
    assert "original model is returned" in result.notes[-1]


def test_same_seed_same_result(trained, data):
    runs = [compressor(trained, data, seed=3, n_trials=5).run() for _ in range(2)]
    a, b = ([(t["sparsities"], t["accuracy"], t["objectives"]) for t in r.trials] for r in runs)
    assert a == b
    assert runs[0].plan.to_dict() == runs[1].plan.to_dict()


def test_resume_loses_and_repeats_no_trial(trained, data, tmp_path):
    first = compressor(trained, data, out_dir=tmp_path, n_trials=3).run()
    assert len(first.trials) == 3
    second = compressor(trained, data, out_dir=tmp_path, n_trials=5).run()
    complete = [t for t in second.trials if t["state"] == "complete"]
    assert len(complete) == 5
    assert [t["sparsities"] for t in complete[:3]] == [t["sparsities"] for t in first.trials]
    assert len({tuple(sorted(t["sparsities"].items())) for t in complete}) == 5
    with pytest.raises(ConfigError, match="different setup"):
        compressor(trained, data, out_dir=tmp_path, n_trials=5, eps=0.2).run()


def test_saved_result_reloads(trained, data, tmp_path):
    result = compressor(trained, data, n_trials=3).run()
    result.save(tmp_path / "run")
    again = CompressionResult.load(tmp_path / "run")  # architecture from the model spec
    x = data.example_input(4)
    with torch.no_grad():
        torch.testing.assert_close(again.model(x), result.model.eval()(x))
    assert again.plan.to_dict() == result.plan.to_dict()
    assert again.after == result.after
    state = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert set(state) == set(result.model.state_dict())
    assert (tmp_path / "run" / "trials.csv").read_text().count("\n") == 4
    assert again.agreement == result.agreement and result.agreement.pairs


def test_unstructured_search_for_size(trained, data):
    result = compressor(
        trained, data, objective=O.Minimize(O.size_fp16), scheme=ap.Prune(), n_trials=5
    ).run()
    assert result.feasible
    assert result.objectives["size_fp16"] < 1.0
    assert result.after["sparse_bytes_fp16"] < result.before["sparse_bytes_fp16"]


def test_multi_objective_returns_the_pareto_front(trained, data):
    result = compressor(
        trained, data, objective=[O.Minimize(O.macs), O.Minimize(O.params)], n_trials=6
    ).run()
    assert result.pareto
    assert result.chosen_trial in result.pareto
    assert set(result.objectives) == {"macs", "params"}


def test_calibration_sets_the_search_threshold(trained, data):
    ev = dict(
        proxy=ap.ProxyOptions(finetune_epochs=0.5, bn_batches=5),
        calibration=ap.CalibrationOptions(steps=2),
    )
    result = compressor(trained, data, **ev, n_trials=4).run()
    calibration = result.settings["calibration"]
    assert [c["level"] for c in calibration][:1] == [0.5] and len(calibration) == 2
    assert result.settings["tau"] >= 0.05


def test_calibration_of_unstructured_pruning_starts_high(trained, data):
    ev = dict(
        proxy=ap.ProxyOptions(finetune_epochs=0.1, bn_batches=2),
        calibration=ap.CalibrationOptions(steps=1),
    )
    objective = O.Minimize(O.params)
    result = compressor(
        trained, data, **ev, scheme=ap.Prune(), objective=objective, n_trials=2
    ).run()
    assert [c["level"] for c in result.settings["calibration"]] == [0.875]


class _Recording(ap.FineTune):
    """A fine-tune that remembers the plans it recovered."""

    def recover(self, model, scheme, *args, **kwargs):
        self.plans = getattr(self, "plans", []) + [dict(scheme.sparsity)]
        return super().recover(model, scheme, *args, **kwargs)


def _finalists_run(trained, data, **kwargs):
    """A search whose finalists above the calibrated plan look feasible and break eps:
    "accuracy" falls with the share of parameters removed, the same in the search and
    after recovery, and the threshold is set halfway to the first broken calibration plan.
    Returns the result, the recovery (with the plans it recovered) and the finalists."""
    full = ap.metrics.count_params(trained).total

    def metric(model, loader):  # a drop growing steeply with the parameters removed
        return 1.0 - 1.5 * (1.0 - ap.metrics.count_params(model).total / full) ** 3

    ev = dict(
        proxy=ap.ProxyOptions(finetune_epochs=0.1, bn_batches=2),
        calibration=ap.CalibrationOptions(steps=2),
    )
    recovery = _Recording(epochs=0.1)
    options = dict(**ev, accuracy=metric, space="uniform", n_trials=12, eps=0.05)
    result = compressor(trained, data, recovery=recovery, **(options | kwargs)).run()
    calibration = result.settings["calibration"]
    held = max(c["level"] for c in calibration if c["holds"])
    feasible = sorted(
        (t for t in result.trials if t["feasible"]), key=lambda t: t["objectives"]["macs"]
    )
    anchor = next(t for t in feasible if t["warm_start"] == held)
    return result, recovery, feasible[: feasible.index(anchor) + 1]


def test_no_search_scores_the_calibrated_plans_alone_and_refines_the_held_one(trained, data):
    # n_trials=0: the ablation without the study. Only the calibration's uniform plans
    # (those inside the searched level range) become trials; the most pruned that held
    # is the finalist (its calibration model reused) and refinement raises its level, with
    # the finalist recovery that max_attempts allowed and no study spent
    result, recovery, _ = _finalists_run(
        trained, data, n_trials=0, space="offsets", refine=2, max_attempts=2
    )
    calibration = result.settings["calibration"]
    held = max(c["level"] for c in calibration if c["holds"])
    assert result.trials and all(t["warm_start"] is not None for t in result.trials)
    assert {t["warm_start"] for t in result.trials} <= {c["level"] for c in calibration}
    assert held in {t["warm_start"] for t in result.trials}
    assert result.feasible
    chosen = result.trials[result.chosen_trial]
    assert chosen["warm_start"] == held
    steps = result.settings["refinement"]
    assert len(steps) == 2 + 1 and all(s["level"] > held for s in steps)
    # calibration, then the refinement steps: the held plan is not recovered again
    assert len(recovery.plans) == len(calibration) + len(steps)


def test_finalists_end_at_the_calibrated_plan(trained, data):
    # the finalists are recovered best first; the first within eps wins, and the
    # calibrated plan, last of them, is not recovered again
    result, recovery, finalists = _finalists_run(trained, data, refine=0)
    calibration = result.settings["calibration"]
    held = max(c["level"] for c in calibration if c["holds"])
    held_drop = next(c["drop"] for c in calibration if c["level"] == held)
    broken = min(c["drop"] for c in calibration if not c["holds"] and c["level"] > held)
    tau = result.settings["tau"]
    assert tau == pytest.approx(max(0.05, held_drop + (broken - held_drop) / 2))
    assert tau > 0.05  # some plans are feasible in the search and break eps

    expected = next(t for t in finalists if t["drop"] <= 0.05)
    assert result.feasible and result.chosen_trial == expected["number"]
    searched = recovery.plans[len(calibration) :]  # recovered after the calibration
    above = finalists[: finalists.index(expected)]
    assert above, "no finalist ranked above the chosen plan: the test lost its point"
    assert [p for p in searched] == [t["sparsities"] for t in above[:3]] + (
        [] if expected is finalists[-1] else [expected["sparsities"]]
    )
    assert len([n for n in result.notes if "backing off" in n]) == len(above[:3])


@pytest.mark.parametrize("refine", [1, 0])
def test_finalists_leave_the_time_for_refining_the_plan_at_hand(trained, data, monkeypatch, refine):
    # with a timeout and the calibrated plan's model at hand, a further finalist is
    # recovered only while it and a refinement step both fit: recoveries "take" 600 s of
    # the 1000 once one has been timed, so one more fits, two do not
    for slowest_or_mean in ("estimate", "longest"):
        monkeypatch.setattr(TimeBudget, slowest_or_mean, lambda self: 600.0 if self.timed else 0.0)
    result, recovery, finalists = _finalists_run(trained, data, refine=refine, timeout=1000)
    searched = recovery.plans[len(result.settings["calibration"]) :]
    assert len(finalists) >= 3, "too few finalists: the test lost its point"
    assert finalists[0]["drop"] > 0.05 and finalists[1]["drop"] > 0.05
    if refine:  # the first finalist, then the held plan (reused), and refinement steps:
        # refine=1, and the 2 finalist recoveries of max_attempts=4 left unspent (one
        # attempt is the held plan's); each fits, since time is not really spent here
        steps = result.settings["refinement"]
        assert searched[0] == finalists[0]["sparsities"] and len(searched) == 1 + len(steps)
        assert result.chosen_trial == finalists[-1]["number"]
        assert len(steps) == 1 + 2
    else:  # the finalists while one recovery fits
        assert searched[:2] == [finalists[0]["sparsities"], finalists[1]["sparsities"]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eps": -0.1}, r"eps: expected a number in \[0, 1\)"),
        ({"data": None}, "data: pass a Data"),
        ({"objective": lambda m, x: 1.0}, "wrap a plain callable"),
        ({"n_trials": -1}, r"n_trials: expected an integer in \[0, inf\)"),
        ({"sampler": "bayes"}, "unknown sampler 'bayes'"),
        ({"bounds": (0.5, 0.2)}, r"bounds: expected low <= high"),
        ({"bounds": "sensitivy"}, "bounds: expected"),
        ({"space": "grid"}, "space: expected one of"),
        ({"scheme": "filter"}, "scheme: expected a scheme operator"),
    ],
)
def test_bad_arguments(trained, data, kwargs, message):
    kwargs = dict(kwargs)
    given = kwargs.pop("data", data)
    with pytest.raises(ConfigError, match=message):
        compressor(trained, given, **kwargs)


def test_calibration_share_is_checked():
    with pytest.raises(ConfigError, match=r"calibration.share: expected a number in \(0, 1\]"):
        ap.CalibrationOptions(share=1.5)
    with pytest.raises(ConfigError, match=r"calibration.threshold: expected one of"):
        ap.CalibrationOptions(threshold="mid")


def test_the_held_threshold_is_the_held_plans_proxy_drop(trained, data):
    # "held": no candidate looks worse to the proxy than the most pruned uniform plan
    # that held eps (here the proxy and the recovery see the same, plan-only accuracy)
    calibration = ap.CalibrationOptions(steps=2, threshold="held")
    result, _, _ = _finalists_run(trained, data, calibration=calibration, refine=0)
    records = result.settings["calibration"]
    held = max((c for c in records if c["holds"]), key=lambda c: c["level"])
    assert result.settings["tau"] == pytest.approx(max(0.05, held["proxy_drop"]))
    feasible = [t for t in result.trials if t["feasible"]]
    assert feasible and all(t["drop"] <= result.settings["tau"] + 1e-12 for t in feasible)
    assert result.feasible


def test_pruned_and_quantized_search_for_size(trained, data, tmp_path):
    scheme = ap.Compose([ap.Prune(), ap.Quantize(bits=4)])
    c = compressor(
        trained, data, objective=O.Minimize(O.size_fp16), scheme=scheme, n_trials=4, refine=0
    )
    assert c.prior == "global"  # quantize has nothing to search: the prune's prior applies
    result = c.run()
    assert result.feasible
    assert set(result.plan.quantized.values()) == {4}
    for layer in result.plan.quantized:
        w = result.model.get_submodule(layer).weight.detach()
        assert torch.unique(w[w != 0]).numel() <= 16
    # smaller than the same sparsities stored with fp16 values
    pruned_only = ap.Prune(result.plan.sparsities())
    reference = copy.deepcopy(trained)
    pruned_only.apply(reference, data.example_input())
    assert result.after["sparse_bytes_fp16"] < 0.6 * ap.metrics.sparse_size(reference, "fp16")
    result.save(tmp_path / "run")
    again = CompressionResult.load(tmp_path / "run")
    assert again.plan.quantized == result.plan.quantized


def _kept_share(trained):
    """An "accuracy" that is the share of ``trained``'s parameters a model keeps."""
    full = ap.metrics.count_params(trained).total
    return lambda model, loader: ap.metrics.count_params(model).total / full


def test_refinement_raises_the_held_plan_while_eps_holds(trained, data):
    # "accuracy" is the share of parameters kept, the same in the search and after
    # recovery, so a plan holds eps = 0.3 exactly when at most 30% of them are removed. The
    # one trial (the warm start at level 0.1) holds with room to spare; the refinement
    # raises its level, each step recovered for real: a quarter of the way to the top of
    # the range while no level is known to break eps, then by bisection
    kept, full = _kept_share(trained), ap.metrics.count_params(trained).total
    recovery = _Recording(epochs=0.1)
    result = compressor(
        trained,
        data,
        eps=0.3,
        accuracy=kept,
        space="uniform",
        recovery=recovery,
        refine=3,
        warm_start=(0.1,),
        n_trials=1,
    ).run()
    assert result.feasible and result.chosen_trial == 0
    steps = result.settings["refinement"]
    # refine=3, and 2 more: of max_attempts=4, one finalist was recovered and one attempt
    # is the calibrated plan's (counted even without a calibration)
    assert len(steps) == 3 + 2 and "refine" in result.phases
    lo, hi = 0.1, None
    for step in steps:  # each step judged against eps on the recovered model
        expected = (lo + hi) / 2 if hi is not None else lo + (1.0 - lo) / 4
        assert step["level"] == pytest.approx(expected, abs=1e-6)
        assert step["holds"] == (step["drop"] <= 0.3)
        lo, hi = (step["level"], hi) if step["holds"] else (lo, step["level"])
    held = [s for s in steps if s["holds"]]
    assert held and not all(s["holds"] for s in steps), "the test lost its point"
    # the result is the recovered model of the highest level that held
    assert result.after["val_accuracy"] == pytest.approx(1 - held[-1]["drop"])
    assert result.after["params"] == pytest.approx(full * (1 - held[-1]["drop"]))
    trial = result.trials[0]
    assert held[-1]["mean_sparsity"] > sum(trial["sparsities"].values()) / len(trial["sparsities"])
    assert len(recovery.plans) == 1 + len(steps)  # the finalist, then the steps
    assert any(n.startswith("refined trial 0: its level raised from 0.1000") for n in result.notes)
    assert not any("inside eps" in n for n in result.notes)  # a step above broke eps
    # every plan recovered for real is paired with its proxy drop: the finalist (trial 0)
    # and each step; "accuracy" depends on the plan alone, so the proxy ranks them exactly
    labels = [p.label for p in result.agreement.pairs]
    assert labels.count("trial 0") == 1, labels
    assert sum(label.startswith("refinement level") for label in labels) == len(steps), labels
    assert result.agreement.spearman == pytest.approx(1.0)
    assert "proxy agreement: Spearman 1.00" in result.summary()


def test_a_result_far_inside_eps_with_nothing_above_tried_says_so(trained, data):
    # the one trial removes about a tenth of the parameters (drop 0.1 of eps 0.3) and
    # nothing more compressed is recovered: the note says the budget ended too soon
    kept = _kept_share(trained)
    result = compressor(
        trained, data, eps=0.3, accuracy=kept, space="uniform", refine=0,
        warm_start=(0.1,), n_trials=1, recovery=ap.FineTune(epochs=0.1),
    ).run()  # fmt: skip
    drop = result.before["val_accuracy"] - result.after["val_accuracy"]
    assert result.feasible and drop < 0.15
    assert any("more than eps/2 inside eps 0.3" in n for n in result.notes), result.notes


def test_a_plan_at_its_bounds_is_not_refined_and_says_so(trained, data):
    # the one trial is at level 1: every unit at its upper bound (0.1), so no level
    # above prunes more. No recovery is spent on refining it, and the note points at
    # the bounds, not at more refine steps
    kept = _kept_share(trained)
    recovery = _Recording(epochs=0.1)
    result = compressor(
        trained, data, eps=0.9, accuracy=kept, space="uniform", refine=3, bounds=(0.0, 0.1),
        warm_start=(1.0,), n_trials=1, recovery=recovery,
    ).run()  # fmt: skip
    assert result.feasible and result.chosen_trial == 0
    assert result.settings["refinement"] == [] and len(recovery.plans) == 1
    assert any("as pruned as its shape allows" in n for n in result.notes), result.notes
    assert not any("more refine steps" in n for n in result.notes)


def test_refinement_can_be_turned_off(trained, data):
    result = compressor(trained, data, n_trials=3, refine=0).run()
    assert result.settings["refinement"] == [] and "refine" not in result.phases
    with pytest.raises(ConfigError, match=r"refine: expected an integer in \[0, inf\)"):
        compressor(trained, data, refine=-1)


class _Timing(ap.objectives.base.Metric):
    """A stand-in for a noisy timing whose noise favours the less pruned plans."""

    name, natural, deterministic = "timing", "maximize", False

    def __call__(self, model, example_input):  # maximised: more parameters look better
        return float(ap.metrics.count_params(model).total)


@pytest.mark.parametrize("noisy", [True, False])
def test_a_timing_never_ends_below_the_most_pruned_held_calibration_plan(trained, data, noisy):
    # every plan holds (the metric is constant), so the calibration holds at levels 0.5,
    # 0.75 and 0.875 and the two in the searched range are the study's only trials. The
    # objective ranks the less pruned one first: with a timing that is noise, and the most
    # pruned plan that held is chosen; with an exact objective the ranking is trusted
    metric = _Timing() if noisy else ap.objectives.base.FunctionMetric(_Timing())
    result = compressor(
        trained,
        data,
        objective=O.Maximize(metric),
        scheme=ap.FilterPrune(round_to=1),  # three distinct plans, at every level
        accuracy=lambda model, loader: 1.0,
        proxy=ap.ProxyOptions(finetune_epochs=0.1, bn_batches=2),
        calibration=ap.CalibrationOptions(steps=3),
        space="uniform",
        n_trials=2,
        refine=0,
        recovery=ap.FineTune(epochs=0.1),
    ).run()
    assert [c["level"] for c in result.settings["calibration"]] == [0.5, 0.75, 0.875]
    assert sorted(t["warm_start"] for t in result.trials) == [0.75, 0.875]
    chosen = next(t for t in result.trials if t["number"] == result.chosen_trial)
    assert chosen["warm_start"] == (0.875 if noisy else 0.75)


def _fp16_fragile(trained):
    """An accuracy under which pruned models lose everything in float16."""
    full = ap.metrics.count_params(trained).nonzero

    def accuracy(model, loader):
        half = next(model.parameters()).dtype == torch.float16
        pruned = ap.metrics.count_params(model).nonzero < full
        return 0.0 if half and pruned else ap.evaluate(model, loader).accuracy

    return accuracy


def test_a_plan_must_hold_eps_in_the_deployed_dtype_too(trained, data):
    fp16_fragile = _fp16_fragile(trained)
    fp16 = O.Maximize(O.Throughput(16, dtype="float16", rounds=2, careful_rounds=3))
    exact = ap.FilterPrune(round_to=1)  # every finalist removes something
    args = dict(accuracy=fp16_fragile, n_trials=3, scheme=exact)
    run = compressor(trained, data, objective=fp16, **args).run()
    assert not run.feasible
    assert any("float16 val 0.0000" in n and "breaks eps" in n for n in run.notes)
    assert run.settings.deployment["dtype"] == "float16"
    assert run.before["deployed_val_accuracy"] == pytest.approx(run.before["val_accuracy"])
    fp32 = O.Maximize(O.Throughput(16, rounds=2, careful_rounds=3))
    run = compressor(trained, data, objective=fp32, **args).run()
    assert run.feasible and "deployed_val_accuracy" not in run.after


def test_an_original_that_breaks_eps_in_its_deployed_dtype_is_refused(trained, data):
    overflowing = copy.deepcopy(trained)
    with torch.no_grad():  # the same function in float32; past float16's range inside
        overflowing.conv1.weight.mul_(1e6)
        overflowing.bn1.running_mean.mul_(1e6)
        overflowing.bn1.running_var.mul_(1e12)
    fp16 = O.Maximize(O.Throughput(16, dtype="float16"))
    message = r"the original model itself has validation accuracy 0\.\d+ in float16, against 0\.9"
    with pytest.raises(ConfigError, match=message):
        compressor(overflowing, data, objective=fp16).run()


def test_a_run_resolves_round_to_auto_by_device_and_objective(trained, data):
    timed = compressor(trained, data, objective=O.Maximize(O.throughput))
    assert timed.scheme.channel_step(256) == 16  # the CPU's multiple
    assert compressor(trained, data).scheme.channel_step(256) == 1  # MACs: no rounding
    fixed = compressor(trained, data, scheme=ap.FilterPrune(round_to=4))
    assert fixed.scheme.channel_step(256) == 4


class _SometimesNan(ap.objectives.base.Metric):
    """MACs, but NaN at its 2nd and 4th call: the 1st and 3rd candidate (the 1st call
    measures the original)."""

    name, natural = "macs_or_nan", "minimize"

    def __init__(self):
        self.calls = 0

    def __call__(self, model, example_input):
        self.calls += 1
        macs = float(ap.metrics.count_macs(model, example_input[:1]))
        return float("nan") if self.calls in (2, 4) else macs


def test_a_broken_trial_fails_with_its_reason_and_the_search_goes_on(trained, data):
    result = compressor(trained, data, objective=O.Minimize(_SometimesNan()), n_trials=8).run()
    failed = [t for t in result.trials if t["state"] == "fail"]
    assert [t["number"] for t in failed] == [0, 2]
    assert all("an objective is not finite" in t["fault"] for t in failed)
    assert sum(t["state"] == "complete" for t in result.trials) == 8  # the budget still met
    assert result.feasible


def test_failures_in_a_row_stop_the_search_with_the_reason(trained, data):
    blown = ap.ProxyOptions(finetune_epochs=0.5, bn_batches=5, finetune_lr=1e12)
    c = compressor(trained, data, proxy=blown, max_failures=2)
    with pytest.raises(
        SearchError,
        match=r"search: 2 trials in a row failed \(the last: the "
        r"candidate's outputs are NaN or inf after its fine-tuning\)",
    ):
        c.run()
    c = compressor(trained, data, trial_timeout=1e-4, max_failures=2)
    with pytest.raises(SearchError, match="over the per-trial time limit"):
        c.run()


def test_a_broken_or_untrained_model_is_refused_before_the_search(trained, data):
    broken = copy.deepcopy(trained)
    with torch.no_grad():
        broken.classifier.weight.fill_(float("nan"))
    with pytest.raises(ConfigError, match="model: its outputs are NaN or inf"):
        compressor(broken, data).run()
    torch.manual_seed(1)
    fresh = ap.create_model("small_cnn", data.num_classes, data.input_shape, width=8)
    with pytest.raises(ConfigError, match=r"is at chance level for 10 classes"):
        compressor(fresh, data).run()


def test_a_scaled_down_plan_that_rounds_to_nothing_is_not_a_result(trained, data):
    fp16_fragile = _fp16_fragile(trained)
    # a timed run on the CPU rounds kept channels (round_to "auto"): trial 0's plan (0.25
    # of each group) at 0.6x keeps every channel of these 8- and 16-channel groups
    fp16 = O.Maximize(O.Throughput(16, dtype="float16", rounds=2, careful_rounds=3))
    run = compressor(trained, data, objective=fp16, accuracy=fp16_fragile, n_trials=3).run()
    assert not run.feasible  # not the original passed off as a compressed model
    assert any(
        "at 0.6x its sparsity removes nothing once channel counts are rounded" in n
        for n in run.notes
    )


def test_a_shared_study_is_finalized_once_and_its_result_read_by_the_others(
    trained, data, tmp_path
):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = compressor(trained, data, storage=url, out_dir=tmp_path / "a").run()
    assert first.directory is None  # made here
    # another process's run on the same study: nothing left to search or finalize
    second = compressor(trained, data, storage=url, out_dir=tmp_path / "b").run()
    assert second.directory == str(tmp_path / "a") and second.objectives == first.objectives
    assert not (tmp_path / "b" / "result.json").exists()
    # where this machine cannot see that directory, the error says who and where
    (tmp_path / "a" / "result.json").unlink()
    with pytest.raises(FinalizedElsewhere, match=r"finalized at 6 complete trials by .* into "):
        compressor(trained, data, storage=url, out_dir=tmp_path / "c").run()
    # finalize: forced, it runs again (a new claim); a study never searched is refused
    again = compressor(trained, data, storage=url, out_dir=tmp_path / "a").finalize(force=True)
    assert again.directory is None and (tmp_path / "a" / "result.json").exists()
    assert "autoprune:finalize:6.2" in optuna.get_all_study_names(url)
    with pytest.raises(ConfigError, match="there is no study 'other'"):
        compressor(trained, data, storage=url, study_name="other").finalize()


def test_the_shape_space_searches_shapes_of_one_cost_then_refines_the_best(trained, data):
    # every trial costs what the prior's plan at the target level costs; the study ranks
    # them by proxy accuracy; the best is recovered first (no fine-tuning in the proxy:
    # no second rung), then the calibrated plan (reused); the one that held is refined
    recovery = _Recording(epochs=1)
    result = compressor(
        trained,
        data,
        space="shape",
        n_trials=8,
        eps=0.03,
        recovery=recovery,
        proxy=ap.ProxyOptions(finetune_epochs=0.0, bn_batches=5),
        calibration=ap.CalibrationOptions(steps=3),
        max_attempts=2,
        refine=1,
    ).run()
    calibration = result.settings["calibration"]
    held = max(c["level"] for c in calibration if c["holds"])
    target = result.settings["target_level"]
    assert target > held
    trials = [t for t in result.trials if t["state"] == "complete"]
    assert len(trials) == 8 and trials[0]["warm_start"] == target
    # then the other allocations' shapes at the same cost (the prior here is uniform)
    assert [t["reference"] for t in trials[:3]] == [None, "global", None]
    macs = [t["objectives"]["macs"] for t in trials]
    in_cost = [t for t, m in zip(trials, macs) if m <= macs[0] + 1e-9]
    assert len(in_cost) >= 6  # (a shape with every unit at its top may cost more)
    assert max(m for m in macs if m <= macs[0] + 1e-9) > 0.8 * macs[0]  # all near it
    best = max(in_cost, key=lambda t: (t["accuracy"], -t["objectives"]["macs"]))
    first = recovery.plans[len(calibration)]
    assert first == best["sparsities"]
    assert result.feasible
    if result.chosen_trial is None:  # the best shape broke eps: the calibrated plan
        assert any("breaks eps" in n for n in result.notes)
        assert any("refined the calibrated plan" in n for n in result.notes) or not any(
            s["holds"] for s in result.settings["refinement"]
        )
    else:
        assert result.chosen_trial == best["number"]
    # the calibrated plan is never recovered again: calibration, one finalist, one step
    assert len(recovery.plans) == len(calibration) + 1 + len(result.settings["refinement"])


def test_the_calibration_passes_its_share_of_the_timeout_until_a_plan_holds(trained, data):
    # "accuracy" falls with the parameters removed, so the bisection's first plans break
    # eps; with a tiny share, it still goes on until one holds, then stops at the share
    full = ap.metrics.count_params(trained).total

    def metric(model, loader):
        return 1.0 - (1.0 - ap.metrics.count_params(model).total / full)

    result = compressor(
        trained,
        data,
        accuracy=metric,
        eps=0.2,
        n_trials=0,
        recovery=ap.FineTune(epochs=0.1),
        calibration=ap.CalibrationOptions(steps=4, share=1e-6),
        refine=0,
        timeout=600,
    ).run()
    holds = [c["holds"] for c in result.settings["calibration"]]
    assert holds[-1] and not any(holds[:-1]) and 1 < len(holds) < 4, holds
    assert result.feasible


def test_the_shape_space_skips_a_study_too_short_to_rank_shapes(trained, data, monkeypatch):
    # when too few trials, their second rung, a finalist and a refinement step would fit
    # the time left, no trial is run: the calibrated plan is refined instead, as the
    # ablation without the study would, and the result says so
    monkeypatch.setattr("autoprune.compress.shape.MIN_TRIALS", 10**6)
    recovery = _Recording(epochs=1)
    result = compressor(
        trained,
        data,
        space="shape",
        n_trials=8,
        eps=0.03,
        recovery=recovery,
        calibration=ap.CalibrationOptions(steps=2),
        refine=1,
        timeout=600,
    ).run()
    assert result.trials == [] and result.chosen_trial is None and result.feasible
    note = next(n for n in result.notes if n.startswith("no study: "))
    assert "1000000 trials and their second rung" in note and "s left" in note
    calibration = result.settings["calibration"]
    held = max(c["level"] for c in calibration if c["holds"])
    steps = result.settings["refinement"]
    # refine=1, and the 3 finalist recoveries max_attempts=4 allowed (none was spent)
    assert len(recovery.plans) == len(calibration) + len(steps) and len(steps) == 1 + 3
    assert steps[0]["level"] > held  # the calibrated plan's level raised
    # once a plan held, no study could follow: the proxy, which would choose nothing,
    # scores no more plans (its time goes to recoveries), and the agreement says so
    first = next(k for k, c in enumerate(calibration) if c["holds"])
    assert all(c["proxy_drop"] is not None for c in calibration[: first + 1])
    assert all(c["proxy_drop"] is None for c in calibration[first + 1 :])
    assert steps[0]["proxy_drop"] is None
    assert not result.agreement.studied
    assert result.agreement.describe().startswith("proxy agreement: not measured: no study")


def test_the_shape_space_takes_one_objective(trained, data):
    with pytest.raises(ConfigError, match="space: 'shape' searches plans of one cost"):
        compressor(trained, data, space="shape", objective=[O.Minimize(O.macs), "params"])
