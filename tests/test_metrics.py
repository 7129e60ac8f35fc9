import torch
from torch import nn

from autoprune import metrics
from autoprune.models import create_model
from autoprune.schemes import filter_prune, prune
from autoprune.testing import randomize_norms


def test_params_and_nonzero():
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight[0] = 0
    assert metrics.count_params(lin) == (15, 11)


def test_macs_match_the_hand_count():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    x = torch.randn(1, 3, 10, 10)
    assert metrics.count_macs(conv, x) == 8 * 3 * 9 * 100
    assert metrics.count_flops(conv, x) == 2 * 8 * 3 * 9 * 100


def test_physical_pruning_cuts_macs_and_dense_size():
    torch.manual_seed(0)
    model = randomize_norms(create_model("resnet10", 10, (1, 16, 16), width=8))
    x = torch.randn(1, 1, 16, 16)
    before = metrics.summarize(model, x)
    assert before.sparse_bytes == before.dense_bytes  # nothing to gain: stored dense
    filter_prune(model, 0.5, x, physical=True)
    after = metrics.summarize(model, x)
    assert after.macs < 0.3 * before.macs
    assert after.dense_bytes < 0.3 * before.dense_bytes
    assert after.params == after.nonzero_params


def test_unstructured_cuts_sparse_size_not_dense():
    torch.manual_seed(0)
    model = create_model("mlp", 10, (1, 8, 8), hidden=(64, 32))
    before = metrics.summarize(model, torch.randn(1, 1, 8, 8))
    prune(model, 0.9)
    after = metrics.summarize(model, torch.randn(1, 1, 8, 8))
    assert after.dense_bytes == before.dense_bytes
    assert after.sparse_bytes < 0.3 * before.sparse_bytes
    assert after.sparse_bytes_fp16 < after.sparse_bytes


def test_timing_reports_its_conditions():
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    t = metrics.measure(model, torch.randn(1, 16), batch_size=8, threads=1, repeats=3)
    assert t.batch_size == 8 and t.threads == 1 and t.device == "cpu"
    assert len(t.runs) == 3 and t.images_per_s > 0 and t.latency_ms > 0
    assert torch.get_num_threads() >= 1
    r = metrics.compare_speed(model, model, torch.randn(1, 16), batch_size=8, rounds=3)
    assert len(r.ratios) == 3 and r.speedup > 0


def test_layer_report_rows_and_table():
    torch.manual_seed(0)
    original = create_model("small_cnn", 10, (1, 8, 8), width=8)
    import copy

    pruned = copy.deepcopy(original)
    x = torch.randn(1, 1, 8, 8)
    filter_prune(pruned, 0.5, x, physical=True)
    rows = metrics.layer_report(original, pruned, x)
    conv2 = next(r for r in rows if r.name == "conv2")
    assert conv2.shape_before == (16, 8, 3, 3) and conv2.shape_after == (8, 4, 3, 3)
    assert conv2.sparsity == 0.75 and conv2.macs_after == conv2.macs_before // 4
    table = metrics.format_table(rows)
    assert "conv2" in table and "16x8x3x3" in table
