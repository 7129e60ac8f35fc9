import json
import os
import re
import subprocess
import sys

import pytest
import torch

from autoprune import __version__
from autoprune.cli import main
from autoprune.report import render

SPEC = """
model: {name: small_cnn, options: {width: 8}, train: {epochs: 4, batch_size: 64}}
data: {name: digits, batch_size: 64}
scheme: {filter_prune: {}}
objective: {minimize: macs}
eps: 0.05
search:
  trials: 5
  evaluation: {calibration_steps: 1, finetune_epochs: 0.5, bn_batches: 5}
recovery: {finetune: {epochs: 1}}
sensitivity: {levels: [0.25, 0.5, 0.75]}
"""


def run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    spec = d / "digits.yaml"
    spec.write_text(SPEC)
    out = d / "run"
    code = main(["search", str(spec), "--out", str(out), "--quiet", "--seed", "1"])
    return spec, out, code


def test_version_and_every_help(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and __version__ in out
    for command in ("search", "sensitivity", "report", "validate", "export", "demo"):
        code, out, _ = run([command, "--help"], capsys)
        assert code == 0 and "usage: autoprune " + command in out


@pytest.mark.slow
def test_search_leaves_everything_behind(search_run, capsys):
    spec, out, code = search_run
    assert code == 0
    for name in (
        "spec.yaml",
        "study.db",
        "trials.csv",
        "result.json",
        "run.log",
        "model.pt",
        "model.apz",
        "plan.json",
        "original.pt",
        "report.md",
        "report.html",
        "history.png",
        "per_layer.png",
        "channel_norms.png",
    ):
        assert (out / name).is_file(), name
    log = (out / "run.log").read_text()
    assert "trial   0" in log and "recovered trial" in log
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "Summary" in html and "Environment" in html
    assert 'src="history.png"' not in html  # self-contained
    # the held plan was refined (2 steps by default, and the finalist recoveries of
    # max_attempts=4 left unspent) and the report shows the steps
    steps = json.loads((out / "result.json").read_text())["settings"]["refinement"]
    spare = re.search(r"refine: up to (\d+) steps: refine=2, and (\d+) finalist", log)
    total = int(spare[1]) if spare else 2
    assert spare is None or int(spare[2]) == total - 2 > 0
    assert 2 <= len(steps) <= total and f"refine 1/{total}: level" in log
    assert "Refinement of trial" in (out / "report.md").read_text()


@pytest.mark.slow
def test_search_resumes_with_more_trials(search_run, capsys):
    spec, out, _ = search_run
    code, stdout, _ = run(
        ["search", str(spec), "--out", str(out), "--quiet", "--seed", "1", "--trials", "7"], capsys
    )
    assert code == 0
    rows = (out / "trials.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 7


@pytest.mark.slow
def test_report_is_rebuilt(search_run, capsys):
    _, out, _ = search_run
    os.remove(out / "report.html")
    code, stdout, _ = run(["report", str(out)], capsys)
    assert code == 0 and (out / "report.html").is_file()


@pytest.mark.slow
@pytest.mark.skipif(render.find_chromium() is None, reason="no chromium on the PATH")
def test_report_renders_in_chromium(search_run, capsys, tmp_path):
    _, out, _ = search_run
    shot = tmp_path / "report.png"
    code, stdout, _ = run(["report", str(out), "--screenshot", str(shot)], capsys)
    assert code == 0 and "rendered by Chromium" in stdout
    seen = render.inspect(shot)
    # the per-layer bars, the channel norms and the history markers are all on the page
    assert seen["kept"] > 1e-3 and seen["removed"] > 1e-3
    assert seen["feasible"] * seen["height"] * seen["width"] > 50


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_export_round_trip(search_run, capsys, fmt, tmp_path):
    from autoprune.compress import CompressionResult

    _, out, _ = search_run
    target = tmp_path / f"model.{fmt}"
    code, stdout, _ = run(["export", str(out), "--format", fmt, "--out", str(target)], capsys)
    assert code == 0 and "outputs match" in stdout
    model = CompressionResult.load(out).model.eval()
    x = torch.randn(3, 1, 8, 8)
    loaded = torch.jit.load(target) if fmt == "torchscript" else torch.export.load(target).module()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.slow
def test_export_in_a_lower_precision(search_run, capsys, tmp_path):
    from autoprune.compress import CompressionResult

    _, out, _ = search_run
    target = tmp_path / "model.pt2"
    argv = ["export", str(out), "--format", "pt2", "--dtype", "float16", "--out", str(target)]
    code, stdout, _ = run(argv, capsys)
    assert code == 0 and "float16); outputs match" in stdout
    loaded = torch.export.load(target).module()
    assert {p.dtype for p in loaded.parameters()} == {torch.float16}
    model = CompressionResult.load(out).model.eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x.half()).float(), model(x), rtol=0.02, atol=0.02)


@pytest.mark.slow
def test_export_onnx_names_the_missing_package(search_run, capsys):
    import importlib.util

    _, out, _ = search_run
    if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxscript"):
        pytest.skip("onnx is installed here")
    code, _, err = run(["export", str(out), "--format", "onnx"], capsys)
    assert code == 2 and "pip install onnx" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_sensitivity_command_and_bounds_from_it(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    code, stdout, _ = run(
        ["sensitivity", str(spec), "--out", str(tmp_path / "sens"), "--quiet"], capsys
    )
    assert code == 0 and "largest sparsity within" in stdout
    for name in ("sensitivity.csv", "sensitivity.json", "sensitivity.png"):
        assert (tmp_path / "sens" / name).is_file()
    csv = (tmp_path / "sens" / "sensitivity.csv").read_text().splitlines()
    assert csv[0] == "unit,size,0.25,0.5,0.75" and len(csv) == 4  # three coupled groups
    spec.write_text(SPEC.replace("trials: 5", "trials: 3\n  bounds: sens/sensitivity.json"))
    code, stdout, _ = run(["validate", str(spec)], capsys)
    assert code == 0 and "sensitivity.json" in stdout


@pytest.mark.slow
def test_pruned_and_quantized_run_reports_and_reloads(tmp_path, capsys):
    spec = tmp_path / "q.yaml"
    spec.write_text(
        SPEC.replace("scheme: {filter_prune: {}}", "scheme: [{prune: {}}, {quantize: {bits: 3}}]")
        .replace("minimize: macs", "minimize: inference_size_fp16")
        .replace("trials: 5", "trials: 3")
    )
    out = tmp_path / "run"
    code, _, _ = run(["search", str(spec), "--out", str(out), "--quiet"], capsys)
    assert code == 0
    report = (out / "report.md").read_text()
    assert "Quantized (k-means weight sharing" in report and "at 3 bits" in report
    from autoprune.compress import CompressionResult

    result = CompressionResult.load(out)
    for layer in result.plan.quantized:
        w = result.model.get_submodule(layer).weight.detach()
        assert torch.unique(w[w != 0]).numel() <= 8


def test_validate_prints_the_resolved_spec(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("eps: 0.03\n")
    code, out, _ = run(["validate", str(spec)], capsys)
    assert code == 0 and "valid" in out and "sampler: tpe" in out and "eps: 0.03" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["demo", "--sparsity", "1.5"],
            "argument --sparsity: expected a number in [0, 1), got 1.5",
        ),
        (["search", "nope.yaml"], "spec: file not found: nope.yaml"),
        (["search", "SPEC", "--trials", "0"], "argument --trials: expected a positive integer"),
        (
            ["validate", "SPEC"],
            "scheme.filter_prune.sparsity: expected a number in [0, 1), got 1.5",
        ),
        (["report", "/no/such/run"], "no run in /no/such/run"),
        (["export", "/no/such/run", "--format", "pt2"], "no saved result in /no/such/run"),
        (["export", "/no/such/run", "--format", "tflite"], "argument --format: invalid choice"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_and_status_2(argv, message, capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("scheme: {filter_prune: {sparsity: 1.5}}\n")
    argv = [str(bad) if a == "SPEC" else a for a in argv]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_python_dash_m_is_the_command():
    proc = subprocess.run(
        [sys.executable, "-m", "autoprune", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and __version__ in proc.stdout


@pytest.mark.slow
def test_demo_prunes_with_every_operator(capsys):
    code, out, _ = run(["demo", "--epochs", "2", "--finetune-epochs", "1", "--quiet"], capsys)
    assert code == 0
    for op in (
        "original",
        "prune",
        "filter_prune",
        "neuron_prune",
        "block_prune",
        "prune+quantize",
    ):
        assert f"\n{op} " in out
