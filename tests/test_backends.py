"""The exactness check's backend flags: off inside, put back after (whatever they were)."""

import pytest
import torch

from autoprune import Compressor, load_data, spec
from autoprune._backends import exact_math, resolve_device
from autoprune.cli import main
from autoprune.errors import ConfigError
from autoprune.models import create_model
from autoprune.schemes import filter_prune, materialize
from autoprune.spec import SpecError


def flags():
    return (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
        torch.get_float32_matmul_precision(),
    )


def test_materialize_checks_with_tf32_off_and_restores_every_flag():
    saved = flags()
    seen = []
    try:
        # the opposite of every default, as a user's own settings might be
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
        user = flags()
        with exact_math():
            seen.append(flags())
        assert seen[0] == (False, True, False, False, "highest")
        assert flags() == user
        net = create_model("resnet10", num_classes=10, input_shape=(1, 8, 8), width=8)
        x = torch.randn(1, 1, 8, 8)
        filter_prune(net, 0.5, x)
        assert materialize(net, x).physical
        assert flags() == user  # the check did not leave its settings behind
    finally:
        (
            torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
            torch.backends.cuda.matmul.allow_tf32,
            precision,
        ) = saved
        torch.set_float32_matmul_precision(precision)


NO_CUDA = not torch.cuda.is_available()


def test_auto_is_cuda_when_present_else_the_cpu():
    assert resolve_device("auto").type == ("cpu" if NO_CUDA else "cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu", "tpu", "cuda:x", 3, None])
def test_a_device_that_is_not_one_names_the_choices(bad):
    with pytest.raises(ConfigError, match=r"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device(bad)


@pytest.mark.skipif(not NO_CUDA, reason="CUDA is present")
def test_cuda_where_there_is_none_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match="'cuda' was asked for, but PyTorch .* sees no CUDA"):
        resolve_device("cuda")
    model = create_model("mlp", 10, (1, 8, 8), hidden=(8,))
    with pytest.raises(ConfigError, match="device: 'cuda:0' was asked for"):
        Compressor(model, "params", 0.01, data=load_data("digits"), device="cuda:0")
    with pytest.raises(SpecError, match="^device: 'cuda' was asked for"):
        spec.validate({"device": "cuda"})
    path = tmp_path / "s.yaml"
    path.write_text("model: mlp\nscheme: prune\n")
    assert main(["search", str(path), "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "device: 'cuda' was asked for" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "study.db").exists()  # refused before any work
