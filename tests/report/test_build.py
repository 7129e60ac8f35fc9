"""The report of a run made from Python has every section the command line's has."""

import pytest
import torch

import autoprune as ap
from autoprune import objectives as O
from autoprune.report import build


@pytest.mark.slow
def test_a_python_run_writes_nothing_by_default_and_reports_fully_when_asked(tmp_path, monkeypatch):
    data = ap.load_data("digits", seed=0)
    torch.manual_seed(0)
    model = ap.create_model("small_cnn", data.num_classes, data.input_shape, width=8)
    ap.train(model, data.loaders(64, seed=0).train, epochs=3, seed=0)
    options = dict(
        data=data,
        n_trials=2,
        recovery=ap.FineTune(epochs=0.25),
        calibration=ap.CalibrationOptions(enabled=False),
        proxy=ap.ProxyOptions(finetune_epochs=0.1, bn_batches=2),
        refine=0,
        batch_size=64,
        progress=False,
    )
    monkeypatch.chdir(tmp_path)
    ap.Compressor(model, O.Minimize(O.macs), 0.5, **options).run()
    assert list(tmp_path.iterdir()) == []  # out_dir=None: nothing written

    run = tmp_path / "run"
    ap.Compressor(model, O.Minimize(O.macs), 0.5, out_dir=run, **options).run()
    assert (run / "original.pt").is_file()
    md, _ = build(run)
    text = open(md).read()
    for section in ("Summary", "Per layer", "Search history", "Channel norms", "Environment"):
        assert f"## {section}\n" in text
    assert "| layer | type | shape before |" in text
    assert (run / "per_layer.png").is_file() and (run / "channel_norms.png").is_file()
