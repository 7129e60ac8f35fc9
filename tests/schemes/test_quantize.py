import pytest
import torch

import autoprune as ap
from autoprune import encoding, metrics
from autoprune.errors import ConfigError
from autoprune.plan import Plan, get_plan
from autoprune.schemes import Compose, Prune, Quantize, quantize
from autoprune.schemes.quantize import kmeans_1d


def cnn():
    torch.manual_seed(0)
    return ap.create_model("small_cnn", 10, (1, 8, 8), width=8)


X = torch.zeros(1, 1, 8, 8)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_each_layer_keeps_at_most_2_to_the_bits_values_and_its_zeros(bits):
    net = cnn()
    Prune(0.7).apply(net, X)
    zeros = {n: (p == 0).clone() for n, p in net.named_parameters() if p.dim() > 1}
    plan = Quantize(bits).apply(net, X)
    assert plan.quantized and set(plan.quantized.values()) == {bits}
    for layer in plan.quantized:
        w = net.get_submodule(layer).weight.detach()
        assert torch.equal(w == 0, zeros[f"{layer}.weight"])  # sparsity kept exactly
        assert torch.unique(w[w != 0]).numel() <= 2**bits
        assert torch.equal(w[w != 0].half().float(), w[w != 0])  # shared values are fp16
    # the output layer is left alone by default
    assert "classifier" not in plan.quantized and "fc" in plan.quantized


def test_quantizing_twice_changes_nothing():
    net = cnn()
    quantize(net, 3, example_input=X)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    quantize(net, 3, example_input=X)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_kmeans_beats_a_uniform_grid():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(5000, generator=g) ** 3  # heavy tails, like trained weights
    c, a = kmeans_1d(v, 8)
    grid = torch.linspace(float(v.min()), float(v.max()), 8)
    nearest = grid[torch.argmin((v[:, None] - grid).abs(), dim=1)]
    assert torch.all(c[1:] > c[:-1])
    assert (v - c[a]).pow(2).mean() < (v - nearest).pow(2).mean()


def test_stored_size_falls_with_the_bits():
    sizes = {}
    for bits in (None, 8, 4, 2):
        net = cnn()
        scheme = Prune(0.8) if bits is None else Compose([Prune(0.8), Quantize(bits)])
        scheme.apply(net, X)
        sizes[bits] = metrics.sparse_size(net, "fp16")
        back = encoding.decode(encoding.encode(net, values="fp16"))
        assert all(
            torch.equal(back[k], v.half().float())
            for k, v in net.state_dict().items()
            if v.is_floating_point()
        )
    assert sizes[None] > sizes[8] > sizes[4] > sizes[2]


def test_plan_records_quantization_through_json():
    net = cnn()
    Compose([Prune(0.5), Quantize(4)]).apply(net, X)
    plan = get_plan(net)
    again = Plan.from_json(plan.to_json())
    assert again.quantized == plan.quantized and again.sparsities() == plan.sparsities()


def test_finetune_quantizes_again_after_training(digits_data):
    loaders = digits_data.loaders(batch_size=64, seed=0)
    torch.manual_seed(0)
    model = ap.create_model("small_cnn", 10, digits_data.input_shape, width=8)
    ap.train(model, loaders.train, epochs=1, seed=0)
    x = digits_data.example_input()
    for recovery in (ap.FineTune(epochs=0.5), ap.LC(steps=2, finetune_epochs=0.2)):
        out = recovery.recover(model, Compose([Prune(0.6), Quantize(3)]), loaders, x)
        for layer in get_plan(out).quantized:
            w = out.get_submodule(layer).weight.detach()
            assert torch.unique(w[w != 0]).numel() <= 8
            assert int((w == 0).sum()) == round(0.6 * w.numel())


@pytest.mark.parametrize("bits", [0, 9, 2.5, True, "4"])
def test_bad_bits(bits):
    with pytest.raises(ConfigError, match="quantize.bits: expected an integer from 1 to 8"):
        Quantize(bits)
