"""The exactness check's backend flags: off inside, put back after (whatever they were)."""

import torch

from autoprune._backends import exact_math
from autoprune.models import create_model
from autoprune.schemes import filter_prune, materialize


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
