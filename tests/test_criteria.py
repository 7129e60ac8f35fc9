import pytest
import torch

from autoprune.criteria import channel_scores, weight_scores
from autoprune.errors import ConfigError


def test_channel_norms():
    rows = torch.tensor([[3.0, -4.0], [1.0, 0.0]])
    assert channel_scores("l1", rows).tolist() == [7.0, 1.0]
    assert channel_scores("l2", rows).tolist() == [5.0, 1.0]
    assert channel_scores("linf", rows).tolist() == [4.0, 1.0]


def test_fpgm_scores_the_central_filter_lowest():
    rows = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [1.0, 1.0]])
    scores = channel_scores("fpgm", rows)
    assert int(scores.argmin()) == 3  # closest to all others: most replaceable


def test_bn_scale_falls_back_without_bn():
    rows = torch.tensor([[3.0, 4.0]])
    assert channel_scores("bn_scale", rows).tolist() == [5.0]
    assert channel_scores("bn_scale", rows, torch.tensor([0.5])).tolist() == [0.5]


def test_random_is_seeded():
    rows = torch.zeros(5, 2)
    a = channel_scores("random", rows, generator=torch.Generator().manual_seed(0))
    b = channel_scores("random", rows, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_weight_scores_put_zeros_first():
    w = torch.tensor([0.5, 0.0, -2.0])
    assert weight_scores("magnitude", w).tolist() == [0.5, float("-inf"), 2.0]
    with pytest.raises(ConfigError, match="unknown weight criterion"):
        weight_scores("l7", w)
