import pytest
import torch
from torch import nn

from autoprune.errors import ConfigError
from autoprune.schemes import BlockPrune, block_prune
from autoprune.schemes.block import as_matrix, block_grid


def block_zero_count(weight: torch.Tensor, block) -> tuple[int, int]:
    grid = block_grid(as_matrix(weight.detach()), block)
    zero = grid.abs().amax(dim=2) == 0
    return int(zero.sum()), zero.numel()


@pytest.mark.parametrize("block", [(4, 4), (1, 8), (2, 3)])
@pytest.mark.parametrize("s", [0.25, 0.5, 0.9])
def test_whole_blocks_are_removed_exactly(block, s):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(18, 14), nn.ReLU(), nn.Linear(14, 3))  # edge blocks too
    plan = block_prune(net, s, block=block)
    removed, total = block_zero_count(net[0].weight, block)
    assert removed == round(s * total)
    assert plan.layers[0].removed == removed and plan.layers[0].total == total
    # a block is removed whole: every zero weight lies in an all-zero block
    grid = block_grid(as_matrix(net[0].weight.detach()), block)
    valid = block_grid(torch.ones(as_matrix(net[0].weight).shape), block) > 0
    kept_blocks = grid.abs().amax(dim=2) > 0
    assert not torch.any((grid == 0) & valid & kept_blocks[..., None])


def test_conv_weight_viewed_as_matrix():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    net(torch.randn(1, 4, 5, 5))
    BlockPrune(0.5, block=(2, 9), types="conv").apply(net, torch.randn(1, 4, 5, 5))
    removed, total = block_zero_count(net[0].weight, (2, 9))
    assert (removed, total) == (8, 16)


def test_lowest_norm_blocks_go_first():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    norms = block_grid(as_matrix(net[0].weight.detach()), (2, 2)).pow(2).sum(2).sqrt().flatten()
    block_prune(net, 0.5, block=(2, 2))
    zero = (block_grid(as_matrix(net[0].weight.detach()), (2, 2)).abs().amax(2) == 0).flatten()
    assert norms[zero].max() <= norms[~zero].min()


def test_block_pruning_twice_does_not_compound():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 2))
    block_prune(net, 0.5)
    snapshot = net[0].weight.clone()
    block_prune(net, 0.5)
    assert torch.equal(snapshot, net[0].weight)


def test_bad_block_arguments():
    with pytest.raises(ConfigError, match=r"block: expected two positive integers"):
        BlockPrune(0.5, block=(0, 4))
    with pytest.raises(ConfigError, match="criterion: block_prune takes one of l2, l1, random"):
        BlockPrune(0.5, criterion="fpgm")
