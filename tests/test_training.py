import copy

import pytest
import torch

from autoprune import training
from autoprune._masking import set_mask
from autoprune.errors import ConfigError
from autoprune.models import create_model
from autoprune.training import evaluate, recalibrate_bn, train


def test_training_learns_and_is_deterministic(digits_data):
    loaders = digits_data.loaders(batch_size=64)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        m = create_model("mlp", digits_data.num_classes, digits_data.input_shape, hidden=(32,))
        before = evaluate(m, loaders.val).accuracy
        train(m, loaders.train, epochs=2, lr=0.05, seed=0)
        models.append(m)
    after = evaluate(models[0], loaders.val)
    assert after.accuracy > max(0.8, before)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)


def test_masked_weights_stay_zero_through_training(digits_data):
    loaders = digits_data.loaders(batch_size=64)
    m = create_model("mlp", 10, (1, 8, 8), hidden=(16,))
    keep = torch.rand(m.fc1.weight.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    set_mask(m, "fc1.weight", keep)
    train(m, loaders.train, max_steps=5, lr=0.1)
    assert torch.all(m.fc1.weight[~keep] == 0)
    assert torch.all(m.fc1.weight[keep] != 0)


def test_training_in_phases_continues_the_learning_rate_schedule(digits_data, monkeypatch):
    loaders = digits_data.loaders(batch_size=64)
    opts, lrs = [], []
    real = training.make_optimizer
    monkeypatch.setattr(
        training, "make_optimizer", lambda *a, **k: opts.append(real(*a, **k)) or opts[-1]
    )

    def after(model):
        lrs.append(opts[-1].param_groups[0]["lr"])

    m = create_model("mlp", 10, (1, 8, 8), hidden=(16,))
    assert (
        train(copy.deepcopy(m), loaders.train, max_steps=10, lr=0.1, after_step=after).steps == 10
    )
    whole = list(lrs)
    lrs.clear()
    first = train(m, loaders.train, max_steps=10, stop=4, lr=0.1, after_step=after)
    second = train(m, loaders.train, max_steps=10, start=4, lr=0.1, after_step=after)
    assert (first.steps, second.steps) == (4, 6)
    assert lrs == pytest.approx(whole) and whole[-1] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ConfigError, match="start: expected 0 <= start <= stop"):
        train(m, loaders.train, max_steps=10, start=11)


def test_recalibrate_bn_changes_running_stats(digits_data):
    loaders = digits_data.loaders(batch_size=64)
    m = create_model("small_cnn", 10, (1, 8, 8), width=4)
    before = copy.deepcopy(m.bn1.running_mean)
    recalibrate_bn(m, loaders.train, batches=3)
    assert not torch.equal(before, m.bn1.running_mean)
    assert not m.training
