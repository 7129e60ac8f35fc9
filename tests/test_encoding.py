import os

import pytest
import torch

from autoprune import encoding
from autoprune.errors import ConfigError, DataError
from autoprune.models import create_model
from autoprune.schemes import block_prune, prune


def sparse_tensor(shape, sparsity, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g)
    t[torch.rand(shape, generator=g) < sparsity] = 0
    return t


@pytest.mark.parametrize("enc", ["dense", "bitmask", "delta", "auto"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.99, 1.0])
def test_round_trip_is_exact(enc, sparsity):
    state = {
        "w": sparse_tensor((37, 53), sparsity),
        "b": torch.randn(37),
        "n": torch.tensor(7, dtype=torch.long),
        "i": torch.arange(5),
    }
    back = encoding.decode(encoding.encode(state, encoding=enc))
    assert list(back) == list(state)
    for k in state:
        assert back[k].dtype == state[k].dtype and torch.equal(back[k], state[k])


def test_delta_handles_long_gaps():
    t = torch.zeros(5000)
    t[[0, 256, 257, 1000, 4999]] = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    blob = encoding.encode({"t": t}, encoding="delta")
    assert torch.equal(encoding.decode(blob)["t"], t)


def test_fp16_values_round_to_half():
    state = {"w": sparse_tensor((20, 20), 0.7)}
    back = encoding.decode(encoding.encode(state, values="fp16"))
    assert torch.equal(back["w"], state["w"].half().float())
    assert len(encoding.encode(state, values="fp16")) < len(encoding.encode(state))


def test_block_encoding_for_block_pruned_layers():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 4))
    block_prune(net, 0.9, block=(8, 8))
    hints = {"0.weight": (8, 8)}
    blob = encoding.encode(net, blocks=hints)
    info = {i.name: i for i in encoding.describe(blob)}
    assert info["0.weight"].encoding == "block"
    back = encoding.decode(blob)
    assert torch.equal(back["0.weight"], net[0].weight.detach())


def test_sizes_follow_the_stated_format():
    w = sparse_tensor((100, 100), 0.9)
    nnz = int((w != 0).sum())
    sizes = {
        i.encoding: i.nbytes
        for e in ("dense", "bitmask", "delta")
        for i in encoding.describe(encoding.encode({"w": w}, encoding=e))
    }
    assert sizes["dense"] == 4 * 10000
    assert sizes["bitmask"] == 10000 // 8 + 4 * nnz
    assert sizes["delta"] >= 5 * nnz  # one byte of index, four of value, plus fillers


def test_pruned_model_is_smaller_and_reloads(tmp_path):
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, (1, 8, 8), width=8)
    dense = len(encoding.encode(model))
    prune(model, 0.95, include_output=True)
    path = tmp_path / "m.apz"
    written = encoding.save(model, path)
    assert written == os.path.getsize(path) < dense / 4
    fresh = create_model("small_cnn", 10, (1, 8, 8), width=8)
    fresh.load_state_dict(encoding.load(path))
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_errors():
    with pytest.raises(ConfigError, match="values: expected 'fp32' or 'fp16'"):
        encoding.encode({}, values="int8")
    with pytest.raises(DataError, match="not an autoprune sparse file"):
        encoding.decode(b"PK\x03\x04....")
    with pytest.raises(DataError, match="sparse model file not found"):
        encoding.load("/nonexistent/m.apz")


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "out.bin"
    encoding.atomic_write(path, b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        encoding.atomic_write(path, b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_inference_state_folds_batchnorm_exactly():
    from autoprune.testing import randomize_norms

    torch.manual_seed(0)
    model = randomize_norms(create_model("resnet10", 10, (1, 16, 16), width=8))
    x = torch.randn(2, 1, 16, 16)
    blob = encoding.encode(encoding.inference_state(model), values="fp32")
    fresh = create_model("resnet10", 10, (1, 16, 16), width=8).eval()
    fresh.load_state_dict(encoding.decode(blob))
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), rtol=1e-4, atol=1e-5)
    sizes = {i.name: i.nbytes for i in encoding.describe(blob)}
    assert sizes["bn1.running_mean"] == 0 and sizes["bn1.running_var"] == 4  # zeros, constant
    assert len(blob) < len(encoding.encode(model))


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.95, 0.999, 1.0])
def test_rice_round_trip_is_exact_and_beats_delta_when_sparse(sparsity):
    w = sparse_tensor((61, 97), sparsity)
    blob = encoding.encode({"w": w}, encoding="rice")
    assert torch.equal(encoding.decode(blob)["w"], w)
    if sparsity == 0.95:
        rice, delta = (
            encoding.describe(encoding.encode({"w": w}, encoding=e))[0].nbytes
            for e in ("rice", "delta")
        )
        assert rice < delta


def test_few_distinct_values_are_stored_as_a_table():
    g = torch.Generator().manual_seed(0)
    table = torch.tensor([-0.5, -0.25, 0.25, 0.75])
    w = table[torch.randint(0, 4, (50, 40), generator=g)]
    w[torch.rand(50, 40, generator=g) < 0.6] = 0
    blob = encoding.encode({"w": w})
    assert torch.equal(encoding.decode(blob)["w"], w)
    nnz = int((w != 0).sum())
    # positions plus 2 bits per stored value and a 4-entry table, not 4 bytes per value
    assert encoding.describe(blob)[0].nbytes < 2000 // 8 + nnz * 2 // 8 + 4 * 4 + 8


def test_version_1_files_still_read():
    import json
    import struct

    w = torch.tensor([0.0, 1.5, 0.0, -2.0])
    head = {
        "format": "autoprune.sparse/1",
        "values": "fp32",
        "tensors": [
            {
                "name": "w",
                "shape": [4],
                "dtype": "torch.float32",
                "encoding": "bitmask",
                "segments": [[0, 1], [1, 8]],
            }
        ],
    }
    h = json.dumps(head).encode()
    payload = bytes([0b01010000]) + w[w != 0].numpy().tobytes()
    blob = b"APZ1" + struct.pack("<I", len(h)) + h + payload
    assert torch.equal(encoding.decode(blob)["w"], w)


def test_corrupt_header_is_a_clear_error():
    blob = bytearray(encoding.encode({"w": torch.ones(3)}))
    blob[10] ^= 0xFF
    with pytest.raises(DataError, match="corrupt autoprune sparse file"):
        encoding.decode(bytes(blob))
