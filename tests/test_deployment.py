import pytest
import torch
from torch import nn

from autoprune import metrics
from autoprune.deployment import Deployment, dtype_name
from autoprune.errors import AutopruneError, ConfigError
from autoprune.models import create_model


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    return create_model("small_cnn", 10, (1, 8, 8), width=8).eval(), torch.randn(4, 1, 8, 8)


def test_names_and_aliases():
    assert dtype_name("fp16") == "float16" and dtype_name("bf16") == "bfloat16"
    assert dtype_name(torch.bfloat16) == "bfloat16"
    with pytest.raises(ConfigError, match=r"throughput.dtype: expected one of float32"):
        Deployment("int8", param="throughput")
    with pytest.raises(ConfigError, match=r"channels_last: expected true or false, got 'yes'"):
        Deployment(channels_last="yes")
    # the name errors use is not part of what a form is
    assert Deployment("fp16", param="latency") == Deployment("float16", param="throughput")


def test_the_model_is_converted_as_a_copy(cnn):
    model, x = cnn
    d = Deployment("bfloat16", channels_last=True)
    deployed = d.model(model)
    assert deployed is not model
    assert all(p.dtype == torch.bfloat16 for p in deployed.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    conv = next(m for m in deployed.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    xi = d.input(x)
    assert xi.dtype == torch.bfloat16 and xi.is_contiguous(memory_format=torch.channels_last)
    assert Deployment().model(model) is model  # float32 eager: the model as it is
    assert Deployment("float16", channels_last=True).input(torch.randn(2, 5)).dim() == 2


def test_evaluated_takes_and_gives_float32(cnn):
    model, x = cnn
    out = Deployment("bfloat16").evaluated(model)(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, model(x), rtol=0.1, atol=0.1)


def test_timings_run_in_the_deployed_form(cnn):
    model, x = cnn
    seen = []
    hook = model.register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
    try:
        t = metrics.measure(model, x, batch_size=8, repeats=2, deployment=Deployment("bf16"))
        r = metrics.compare_speed(model, model, x, batch_size=8, rounds=2, deployment=None)
    finally:
        hook.remove()
    # the deployed copy (hook included) ran every warm-up and timed pass in bfloat16
    assert seen[:5] == [torch.bfloat16] * 5
    assert seen[5:] == [torch.float32] * 10  # float32: 3 warm-ups and 2 rounds, both models
    assert t.deployment == "bfloat16" and r.reference.deployment == "float32"
    assert t.batch_size == 8 and len(t.runs) == 2
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_compile_failures_name_the_fix(cnn, monkeypatch):
    model, x = cnn

    def broken(*args, **kwargs):
        def run(*a, **k):
            raise RuntimeError("no compiler here")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    message = r"torch.compile failed on this machine .*no compiler here\); set compile to false"
    with pytest.raises(AutopruneError, match=message):
        Deployment(compile=True).model(model)(x)


@pytest.mark.slow
def test_compiled_models_run_and_match_eager():
    torch.manual_seed(0)
    model = create_model("mlp", 10, (1, 8, 8), hidden=(32,)).eval()
    x = torch.randn(4, 1, 8, 8)
    deployed = Deployment(compile=True).model(model)
    assert isinstance(deployed.inner, torch._dynamo.eval_frame.OptimizedModule)
    with torch.inference_mode():
        torch.testing.assert_close(deployed(x), model(x))
    t = metrics.measure(model, x, batch_size=8, repeats=2, deployment=Deployment(compile=True))
    assert t.deployment == "float32, compile"
