import pytest
import torch

from autoprune import objectives as O
from autoprune.errors import ConfigError
from autoprune.models import create_model
from autoprune.schemes import filter_prune, prune


@pytest.fixture
def models():
    torch.manual_seed(0)
    a = create_model("small_cnn", 10, (1, 8, 8), width=8).eval()
    b = create_model("small_cnn", 10, (1, 8, 8), width=8).eval()
    b.load_state_dict(a.state_dict())
    return a, b, torch.randn(1, 1, 8, 8)


@pytest.mark.parametrize(
    "name",
    [
        "params",
        "macs",
        "flops",
        "size",
        "size_fp16",
        "inference_size_fp16",
        "throughput",
        "latency",
    ],
)
def test_every_builtin_computes(models, name):
    a, _, x = models
    metric = O.as_metric(name)
    value = metric(a, x)
    assert value > 0
    assert metric.ratio(a, a, x) > 0


def test_ratios_follow_pruning(models):
    a, b, x = models
    filter_prune(b, 0.5, x, physical=True)
    assert O.macs.ratio(b, a, x) == pytest.approx(O.macs(b, x) / O.macs(a, x))
    assert O.params.ratio(b, a, x) < 0.5
    assert O.Size(encoding="dense").ratio(b, a, x) < 0.5
    assert O.throughput.ratio(b, a, x) > 0  # interleaved timing: only its sign is certain


def test_size_counts_sparse_bytes(models):
    a, b, x = models
    prune(b, 0.9)
    assert O.size(b, x) < 0.4 * O.size(a, x)
    assert O.size_fp16(b, x) < O.size(b, x)
    assert O.Size(encoding="dense")(b, x) == O.Size(encoding="dense")(a, x)


def test_wrappers_and_plain_callables():
    def f(model, x):
        return 3.0

    assert O.Maximize(f).direction == "maximize" and O.Maximize(f).name == "f"
    assert O.Minimize("size").metric is O.size
    objs = O.as_objectives([O.Maximize(O.throughput), "size"])
    assert [(o.name, o.direction) for o in objs] == [
        ("throughput", "maximize"),
        ("size", "minimize"),
    ]
    with pytest.raises(ConfigError, match="wrap a plain callable in Maximize"):
        O.as_objectives(f)
    with pytest.raises(ConfigError, match="unknown objective 'sizes'"):
        O.as_objectives("sizes")
    with pytest.raises(ConfigError, match="listed twice"):
        O.as_objectives(["size", O.Minimize(O.size)])
    with pytest.raises(ConfigError, match="size.values"):
        O.Size(values="int8")


@pytest.mark.parametrize(
    "metric", [O.Throughput(16, dtype="bf16", channels_last=True), O.Latency(dtype="bfloat16")]
)
def test_bfloat16_timings_on_the_cpu(models, metric):
    a, b, x = models
    seen = []
    a.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    assert metric(a, x) > 0
    assert metric.ratio(b, a, x) > 0
    assert seen and set(seen) == {torch.bfloat16}  # every timed pass ran in bfloat16
    assert all(p.dtype == torch.float32 for p in a.parameters())  # on copies
    assert "bfloat16" in metric.describe() and "bfloat16" in repr(metric)


def test_one_deployment_form_per_run():
    fp16 = O.Maximize(O.Throughput(dtype="float16"))
    assert O.deployment_of([fp16, O.Minimize(O.size)]).dtype == "float16"
    assert O.deployment_of([O.Minimize(O.size)]).is_default
    with pytest.raises(ConfigError, match="deployed in different forms"):
        O.as_objectives([fp16, O.Minimize(O.Latency(dtype="bfloat16"))])
