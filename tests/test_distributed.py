"""One study, several worker processes, a real PostgreSQL server: the trial count is exact,
no trial number repeats, and exactly one process writes the result.

The server is started for the test (Debian's ``postgresql`` package: ``initdb`` and
``pg_ctl``) on 127.0.0.1; where none can be started the test is skipped and says why.
"""

from __future__ import annotations

import collections
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import optuna
import pytest
import torch

from autoprune.data import load_data
from autoprune.models import create_model
from autoprune.training import train

pytestmark = pytest.mark.slow

SPEC = """
model: {name: mlp, options: {hidden: [256, 128]}, checkpoint: CHECKPOINT}
data: {name: digits, batch_size: 64}
scheme: {neuron_prune: {}}
objective: {minimize: params}
eps: 0.05
search:
  trials: 36
  evaluation: {calibrate: false, finetune_epochs: 1, bn_batches: 2}
  max_attempts: 1
  refine: 0
recovery: {finetune: {epochs: 0.2}}
output: {report: false}
"""


def _tool(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


@pytest.fixture(scope="module")
def postgres():
    initdb, pg_ctl = _tool("initdb"), _tool("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("no PostgreSQL here (initdb, pg_ctl not found): apt-get install postgresql")
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed: pip install -e '.[dev]'")
    root = tempfile.mkdtemp(prefix="autoprune-pg-", dir="/tmp")
    os.chmod(root, 0o777)
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = os.path.join(root, "data")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    try:
        subprocess.run(
            [*as_user, initdb, "-D", data, "-A", "trust", "-U", "postgres"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *as_user,
                pg_ctl,
                "-D",
                data,
                "-o",
                options,
                "-l",
                os.path.join(root, "log"),
                "-w",
                "start",
            ],
            check=True,
            capture_output=True,
        )
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"a PostgreSQL server could not be started here: {exc}")
    yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def test_three_workers_share_one_study_exactly(postgres, tmp_path):
    torch.manual_seed(0)
    model = create_model("mlp", 10, (1, 8, 8), hidden=(256, 128))
    train(model, load_data("digits").loaders(64).train, epochs=5, seed=0)
    checkpoint = tmp_path / "mlp.pt"
    torch.save(model.state_dict(), checkpoint)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("CHECKPOINT", str(checkpoint)))
    out = tmp_path / "run"
    base = [sys.executable, "-m", "autoprune", "search", str(spec), "--out", str(out)]
    base += ["--storage", postgres, "--study", "shared", "--quiet", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = lambda *extra: subprocess.Popen(  # noqa: E731
        [*base, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    coordinator = run()
    workers = [run("--worker"), run("--worker")]
    said = []
    for proc in [*workers, coordinator]:
        stdout, err = proc.communicate(timeout=900)
        assert proc.returncode in (0, 1), err  # 1: a result, but nothing held eps
        said.append(stdout)
    # the worker that finalized says so; a worker that did not just ends
    finalized_by_a_worker = sum("worker: it finalized the study" in s for s in said[:2])
    assert finalized_by_a_worker <= 1, said
    assert all(s.startswith("worker: ") for s in said[:2]), said
    assert "feasible" in said[2], said[2]  # the coordinator prints the result either way

    study = optuna.load_study(study_name="shared", storage=postgres)
    states = collections.Counter(t.state.name for t in study.trials)
    assert states["COMPLETE"] == 36, states  # exact: surplus trials are pruned unscored
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    scored_by = {t.user_attrs["worker"] for t in study.trials if t.state.name == "COMPLETE"}
    assert len(scored_by) >= 2, scored_by  # the trials were shared out
    results = glob.glob(str(tmp_path / "**" / "result.json"), recursive=True)
    assert results == [str(out / "result.json")]  # exactly one final result
    # ... made once: one claim on finalizing the study at 36 trials, by one process, done
    claims = [n for n in optuna.get_all_study_names(postgres) if n.startswith("shared:")]
    assert sorted(claims) == ["shared:finalize:36.1", "shared:prepare.1"], claims
    done = optuna.load_study(study_name="shared:finalize:36.1", storage=postgres).user_attrs
    assert "done" in done and done["holder"]["out_dir"] == str(out)
