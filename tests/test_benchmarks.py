"""The benchmark suite's bookkeeping: its summary arithmetic and its per-row cache (the
suite itself runs as ``python benchmarks/suite.py --quick``)."""

import importlib.util
import math
import os
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = os.path.join(os.path.dirname(HERE), "benchmarks")


@pytest.fixture(scope="module")
def suite():
    sys.path.insert(0, BENCHMARKS)
    try:
        spec = importlib.util.spec_from_file_location("suite", os.path.join(BENCHMARKS, "suite.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["suite"] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(BENCHMARKS)
        sys.modules.pop("suite", None)


def row(suite, arch, task, name, value, drop=0.005):
    return suite.Row(
        arch=arch, task=task, row=name, value=value, val_drop=drop, test_acc=0.9,
        feasible=drop <= suite.EPS, macs=1 / value, size=value, recoveries=8, trials=0,
        minutes=1.0,
    )  # fmt: skip


def test_summary_divides_by_the_best_feasible_baseline_and_the_ablation(suite):
    rows = [
        row(suite, "vgg", "macs", "uniform", 2.0),
        row(suite, "vgg", "macs", "global", 4.0, drop=0.02),  # breaks eps: not a baseline
        row(suite, "vgg", "macs", "autoprune", 3.0),
        row(suite, "vgg", "macs", "no_study", 2.5),
        row(suite, "vgg", "size", "uniform", 10.0),
        row(suite, "vgg", "size", "global", 20.0),
        row(suite, "vgg", "size", "autoprune", 15.0),
        row(suite, "vgg", "size", "no_study", 15.0),
    ]
    line, table = suite.summary(rows)
    macs, size = table
    assert macs["best baseline"] == "uniform" and macs["autoprune / best"] == pytest.approx(1.5)
    assert size["best baseline"] == "global" and size["autoprune / best"] == pytest.approx(0.75)
    assert macs["autoprune / no_study"] == pytest.approx(1.2)
    assert f"{math.sqrt(1.5 * 0.75):.3f}x (lowest 0.750x)" in line
    assert f"no_study {math.sqrt(1.2 * 1.0):.3f}x over 2 pair(s)" in line


def test_rows_are_cached_and_read_back(suite, tmp_path):
    path = str(tmp_path / "vgg.macs.uniform.json")
    assert suite.cached(path) is None
    saved = row(suite, "vgg", "macs", "uniform", 2.0)
    suite.save(path, saved)
    assert suite.cached(path) == saved
    assert os.listdir(tmp_path) == ["vgg.macs.uniform.json"]  # no temporary file left


def test_settings_key_changes_with_what_a_row_does(suite):
    S = suite.Settings
    assert S().key() == S().key()
    assert S().key() != S(recovery_epochs=2).key()
    assert S.quick().key() != S().key()
    # autoprune's own settings change its rows' keys, not the baselines'
    assert S(prior="sensitivity").key("autoprune") != S().key("autoprune")
    assert S(prior="sensitivity").key("no_study") != S().key("no_study")
    for row in ("uniform", "global", "dense"):
        assert S(prior="sensitivity", trials=3).key(row) == S().key(row)
        assert S(recovery_lr=0.1).key(row) != S().key(row)
    # the ablation runs no study: the study's space and trials leave its key alone
    assert S(space="offsets", trials=3).key("no_study") == S().key("no_study")
    assert S(space="offsets").key("autoprune") != S().key("autoprune")


def test_searched_rows_are_keyed_by_the_package_s_code_the_load_and_the_seed(suite, monkeypatch):
    S = suite.Settings
    before = {row: S().key(row) for row in suite.ROWS}
    monkeypatch.setattr(suite, "source_hash", lambda: "changed")
    for row in suite.ROWS:  # a change to the package runs the Compressor's rows again
        assert (S().key(row) != before[row]) == (row in suite.SEARCHED)
    for row in suite.ROWS:  # the load test has its own searched rows, the same baselines
        assert (S(load=1).key(row) != S().key(row)) == (row in suite.SEARCHED)
        assert (S(seed=1).key(row) != S().key(row)) == (row in suite.SEARCHED)
    assert S(seed=1).key() != S(load=1).key()


def test_the_load_runs_beside_the_block_and_stops_with_it(suite):
    def cpu_ticks(pid):  # user time, in clock ticks (Linux)
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[11])

    with suite.busy(1) as spinning:
        assert len(spinning) == 1 and spinning[0].poll() is None
        if os.path.exists(f"/proc/{spinning[0].pid}/stat"):
            first = cpu_ticks(spinning[0].pid)
            time.sleep(1.0)  # it spins (a sleeping process would gain no ticks)
            assert cpu_ticks(spinning[0].pid) - first >= 0.1 * os.sysconf("SC_CLK_TCK")
    assert spinning[0].poll() is not None  # stopped with the block


@pytest.fixture(scope="module")
def step_policy():
    spec = importlib.util.spec_from_file_location(
        "step_policy", os.path.join(BENCHMARKS, "step_policy.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["step_policy"] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("step_policy", None)


def test_without_noise_a_bisection_closes_in_on_the_edge_and_regula_falsi_faster(step_policy):
    curve = step_policy.Curve()
    edge = curve.edge(0.01)
    for steps in (3, 5, 8):
        bisect = step_policy.simulate("bisect", steps, curve, 0.01, 0.0, runs=1)
        assert 1 - 2**-steps / edge <= bisect.mean <= 1.0 and bisect.sd == 0
        assert bisect.lucky == 0  # no noise: nothing holds past the edge
        falsi = step_policy.simulate("falsi", steps, curve, 0.01, 0.0, runs=1)
        assert bisect.mean <= falsi.mean <= 1.0


def test_noise_spreads_the_result_and_lets_plans_past_the_edge_hold(step_policy):
    curve = step_policy.Curve()
    noisy = step_policy.simulate("bisect", 5, curve, 0.01, 0.0022, runs=2000)
    assert 0.03 < noisy.sd < 0.2 and 0.1 < noisy.lucky < 0.7
    careful = step_policy.simulate("falsi_margin", 5, curve, 0.01, 0.0022, runs=2000)
    assert careful.lucky < noisy.lucky  # aiming under eps: fewer plans hold by luck
