import pytest
import torch

from autoprune.errors import ConfigError
from autoprune.plan import get_plan
from autoprune.recovery import FineTune
from autoprune.recovery.base import gradual_schedule
from autoprune.schemes import Compose, FilterPrune, Prune, Quantize


def test_finetune_keeps_the_plan(trained):
    model, loaders, x = trained
    out = FineTune(epochs=1).recover(model, Prune(0.5), loaders, x)
    w = out.conv2.weight
    assert int((w == 0).sum()) == round(0.5 * w.numel())


def test_gradual_schedule_is_cubic_and_reaches_the_target_at_the_ramp():
    s = gradual_schedule(100, 5)
    assert list(s) == [0, 25, 50, 75, 100]
    fractions = list(s.values())
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    # cubic: most of the pruning happens early
    assert fractions[0] == pytest.approx(1 - 0.8**3, abs=1e-4)
    assert fractions[1] - fractions[0] > fractions[-1] - fractions[-2]


def test_scaled_copies_are_masked_and_skip_quantization():
    assert Prune({"a": 0.8, "b": 0.4}).scaled(0.5).sparsity == {"a": 0.4, "b": 0.2}
    fp = FilterPrune(0.6, physical=True)
    assert fp.scaled(0.5).physical is False and fp.physical is True
    assert Quantize(4).scaled(0.5) is None
    both = Compose([Prune(0.8), Quantize(4)]).scaled(0.25)
    assert [s.op for s in both.schemes] == ["prune"] and both.schemes[0].sparsity == 0.2


def test_gradual_ramp_grows_to_the_plan(trained):
    _, loaders, _ = trained
    ramp = FineTune(epochs=1, gradual=0.5, stages=4)._ramp(Prune(0.8), loaders)
    steps = round(0.5 * len(loaders.train))
    assert list(ramp)[0] == 0 and list(ramp)[-1] == steps
    sparsities = [stage.sparsity for stage in ramp.values()]
    assert sparsities == sorted(sparsities) and sparsities[-1] == 0.8


def test_gradual_finetune_ends_exactly_at_the_plan(trained):
    model, loaders, x = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    ft = FineTune(epochs=1, gradual=0.5, stages=4)
    scheme = Compose([Prune(0.8), Quantize(2)])
    ramp = ft._ramp(scheme, loaders)
    for stage in ramp.values():  # record what each stage prunes, in order
        apply = stage.apply
        stage.apply = lambda m, xx, apply=apply: (
            seen.append(float((m.conv2.weight == 0).float().mean())) or apply(m, xx)
        )
    ft._ramp = lambda scheme, loaders: ramp
    out = ft.recover(model, scheme, loaders, x)
    assert len(seen) == 4 and seen[0] == 0.0 and seen == sorted(seen)
    assert 0.0 < seen[1] < 0.8  # pruned part-way while training
    for entry in get_plan(out).layers:
        w = out.get_submodule(entry.layer).weight
        assert int((w == 0).sum()) == round(0.8 * w.numel())
        assert len(torch.unique(w[w != 0])) <= 4  # quantized after training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_gradual_structured_pruning_ends_physical(trained):
    model, loaders, x = trained
    out = FineTune(epochs=0.5, gradual=0.5, stages=3).recover(
        model, FilterPrune(0.5, physical=True), loaders, x
    )
    assert get_plan(out).physical
    assert out.conv1.out_channels == 4


def test_gradual_structured_pruning_trains_the_smaller_model_after_the_ramp(trained, monkeypatch):
    from autoprune import training

    model, loaders, x = trained
    calls = []
    real = training.train

    def spy(m, loader, **kw):
        calls.append((m.conv1.out_channels, kw.get("start", 0), kw.get("stop")))
        return real(m, loader, **kw)

    monkeypatch.setattr(training, "train", spy)
    ft = FineTune(epochs=1, gradual=0.5, stages=3)
    out = ft.recover(model, FilterPrune(0.5), loaders, x)
    ramp = round(0.5 * len(loaders.train))
    # the ramp trains the full-width masked model; the rest, the physical one
    assert calls == [(8, 0, ramp), (4, ramp, None)]
    assert get_plan(out).physical and out.conv1.out_channels == 4
    calls.clear()
    ft.recover(model, Prune(0.5), loaders, x)  # unstructured: one run, masked throughout
    assert calls == [(8, 0, None)]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gradual": 1.5}, "finetune.gradual: expected a number in"),
        ({"gradual": "yes"}, "finetune.gradual: expected a number in"),
        ({"stages": 1}, "finetune.stages: expected an integer >= 2"),
        ({"lr": 0}, "finetune.lr: expected a positive number"),
    ],
)
def test_finetune_arguments_are_checked(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        FineTune(**kwargs)
