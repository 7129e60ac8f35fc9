"""The command line as separate processes: kill -9 and resume, Ctrl-C, two processes on one
run directory, a finished run run again, trials that break."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pytest

from autoprune.compress import CompressionResult

pytestmark = pytest.mark.slow

SPEC = """
model: {name: mlp, options: {hidden: [32]}, train: {epochs: 3, batch_size: 64}}
data: {name: digits, batch_size: 64}
scheme: {neuron_prune: {}}
objective: {minimize: params}
eps: 0.05
search:
  trials: TRIALS
  evaluation: {calibrate: false, finetune_epochs: 0.2, bn_batches: 2}
  max_attempts: 1
  refine: 0
recovery: {finetune: {epochs: 0.2}}
output: {report: false}
"""


def write_spec(tmp_path, trials=40, extra=""):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.replace("TRIALS", str(trials)) + extra)
    return path


def start(spec, out, *flags):
    cmd = [sys.executable, "-m", "autoprune", "search", str(spec), "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [*cmd, *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def wait_for_trials(out, n, proc, timeout=120):
    """Until run.log shows trial ``n`` scored (or the process ended)."""
    log = out / "run.log"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(re.findall(r"trial +\d+: ", log.read_text())) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"no trial {n} in {log} (process ended: {proc.poll()})")


def study_of(out):
    return optuna.load_study(study_name="autoprune", storage=f"sqlite:///{out}/study.db")


def test_kill_9_at_any_point_then_resume(tmp_path):
    spec, out = write_spec(tmp_path, trials=30), tmp_path / "run"
    for n in (1, 6, 12):  # three kills, each later in the search
        proc = start(spec, out)
        wait_for_trials(out, n, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proc = start(spec, out)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode in (0, 1), err
    study = study_of(out)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 30  # exact: nothing lost, nothing extra
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(params) == len(set(params))  # no completed trial replayed
    assert not [p for p in os.listdir(out) if ".tmp" in p]  # no temporary file left
    CompressionResult.load(out)  # every file matches the manifest


def test_ctrl_c_stops_with_one_line_and_keeps_the_trials(tmp_path):
    spec, out = write_spec(tmp_path, trials=400), tmp_path / "run"
    proc = start(spec, out)
    wait_for_trials(out, 3, proc)
    t = time.time()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert time.time() - t < 15
    lines = err.strip().splitlines()
    assert lines[-1].startswith("autoprune: interrupted after ") and "resume" in lines[-1]
    assert "Traceback" not in err
    assert (out / "trials.csv").read_text().count("\n") >= 4  # header and the trials done


def test_a_second_process_on_one_run_directory_is_refused(tmp_path):
    spec, out = write_spec(tmp_path, trials=400), tmp_path / "run"
    first = start(spec, out)
    try:
        wait_for_trials(out, 1, first)
        second = start(spec, out)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2
        assert f"another autoprune process (pid {first.pid}) is working in it" in err
        assert len(err.strip().splitlines()) == 1
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # a dead process holds nothing: the directory is free again at once
    third = start(write_spec(tmp_path, trials=2), tmp_path / "run2")
    third.communicate(timeout=300)
    assert third.returncode in (0, 1)


def test_a_finished_run_is_complete_unless_forced(tmp_path):
    spec, out = write_spec(tmp_path, trials=3), tmp_path / "run"
    proc = start(spec, out)
    proc.communicate(timeout=300)
    assert proc.returncode in (0, 1)
    before = (out / "result.json").read_bytes()
    again = start(spec, out)
    stdout, _ = again.communicate(timeout=120)
    assert again.returncode == proc.returncode
    assert f"{out} is complete" in stdout and (out / "result.json").read_bytes() == before
    forced = start(spec, out, "--force")
    stdout, _ = forced.communicate(timeout=300)
    assert "is complete" not in stdout and forced.returncode in (0, 1)


def test_trials_that_break_stop_the_search_with_one_line(tmp_path):
    extra = "\n".join(
        [
            "search:",
            "  trials: 10",
            "  evaluation: {calibrate: false, finetune_epochs: 0.2, finetune_lr: 1.0e+12}",
            "  max_failures: 2",
        ]
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.split("search:")[0] + extra + "\n")
    proc = start(spec, tmp_path / "run")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert err.strip().splitlines() == [
        "autoprune: error: search: 2 trials in a row failed (the last: the candidate's "
        "outputs are NaN or inf after its fine-tuning); check the data, the learning rates "
        "(search.evaluation.finetune_lr) and the model, or raise search.max_failures"
    ]


def finalize(spec, out, *flags):
    cmd = [sys.executable, "-m", "autoprune", "finalize", str(spec), "--out", str(out)]
    return subprocess.run(
        [*cmd, "--quiet", *flags], capture_output=True, text=True, timeout=300, check=False
    )


def test_finalize_finishes_a_study_whose_search_was_killed(tmp_path):
    spec, out = write_spec(tmp_path, trials=400), tmp_path / "run"
    proc = start(spec, out)
    wait_for_trials(out, 5, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "result.json").exists()
    done = finalize(spec, out)
    assert done.returncode in (0, 1), done.stderr
    result = CompressionResult.load(out)  # every file matches the manifest
    complete = sum(t.state.name == "COMPLETE" for t in study_of(out).trials)
    assert complete >= 5 and len(result.trials) >= complete
    claims = sorted(n for n in optuna.get_all_study_names(f"sqlite:///{out}/study.db") if ":" in n)
    assert claims == [f"autoprune:finalize:{complete}.1", "autoprune:prepare.1"]
    # finalized once: again, it says where the result is and changes nothing
    before = (out / "result.json").read_bytes()
    again = finalize(spec, out)
    assert again.returncode == done.returncode, again.stderr
    assert "already finalized" in again.stdout and (out / "result.json").read_bytes() == before
    forced = finalize(spec, out, "--force")
    assert forced.returncode in (0, 1) and "already finalized" not in forced.stdout
    names = optuna.get_all_study_names(f"sqlite:///{out}/study.db")
    assert f"autoprune:finalize:{complete}.2" in names


def test_finalize_needs_a_prepared_study(tmp_path):
    done = finalize(write_spec(tmp_path), tmp_path / "never-searched")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "autoprune: error: search.study: there is no study 'autoprune' in sqlite:///"
        f"{tmp_path}/never-searched/study.db; give the --storage and --study its search used"
    ]


SLOW_PREPARATION = (
    SPEC.replace("hidden: [32]", "hidden: [256, 128]")
    .replace("calibrate: false", "calibrate: true")
    .replace("finetune: {epochs: 0.2}", "finetune: {epochs: 1}")
)


@pytest.mark.parametrize("delay", [0.0, 0.4, 0.9, 1.6])
def test_ctrl_c_during_the_preparation_stops_with_one_line(tmp_path, delay):
    spec, out = tmp_path / "spec.yaml", tmp_path / "run"
    spec.write_text(SLOW_PREPARATION.replace("TRIALS", "20"))
    proc = start(spec, out)
    log, deadline = out / "run.log", time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and "original: val" in log.read_text():
            break
        time.sleep(0.05)
    time.sleep(delay)  # somewhere in the calibration: training, or a write to the study
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("autoprune: interrupted")
