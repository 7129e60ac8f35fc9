import subprocess
import sys

import pytest

from autoprune import __version__
from autoprune.cli import main


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    assert "--sparsity" in out and "--finetune-epochs" in out


def test_demo_prunes_with_every_operator(capsys):
    assert (
        main(["demo", "--epochs", "2", "--finetune-epochs", "1", "--quiet", "--sparsity", "0.5"])
        == 0
    )
    out = capsys.readouterr().out
    for op in ("original", "prune", "filter_prune", "neuron_prune", "block_prune"):
        assert f"\n{op} " in out
    assert "test_acc" in out and "speedup" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["demo", "--sparsity", "1.5"],
            "argument --sparsity: expected a number in [0, 1), got 1.5",
        ),
        (["demo", "--epochs", "0"], "argument --epochs: expected a positive integer, got 0"),
        (["demo", "--model", "vit"], "--model: expected resnet10, small_cnn or mlp, got 'vit'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_and_status_2(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_python_dash_m_is_the_command():
    proc = subprocess.run(
        [sys.executable, "-m", "autoprune", "demo", "--sparsity", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--sparsity" in proc.stderr
