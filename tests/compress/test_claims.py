"""Claims: a stage of a shared study runs once; a dead holder is taken over; earlier runs
of one directory run again; Ctrl-C waits for a storage write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import optuna
import pytest

from autoprune.compress.claims import Claims
from autoprune.compress.study import pid_alive, uninterrupted

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(url=None, name="s"):
    return optuna.create_study(storage=url, study_name=name, load_if_exists=True)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.slow
def test_processes_racing_for_a_stage_get_exactly_one_claim(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _study(url)
    code = (
        "import optuna, sys\n"
        "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
        "from autoprune.compress.claims import Claims\n"
        f"study = optuna.load_study(study_name='s', storage={url!r})\n"
        "claim, mine = Claims(study, sys.argv[1]).settle('finalize:5', wait=False)\n"
        "print('MINE' if mine else 'NOT')\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, f"dir{i}"], stdout=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    said = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert sorted(said) == ["MINE", "NOT", "NOT", "NOT"], said
    names = Claims(_study(url)).names()
    assert names == {"s:finalize:5.1"}  # one claim, one generation


def test_a_claim_whose_holder_died_is_taken_over_once():
    study = _study()
    claims = Claims(study, "runs/a")
    first = claims.take("prepare", 1)
    assert first is not None
    study._storage.set_study_user_attr(
        first.study_id, "holder", {**first.holder, "pid": _dead_pid()}
    )
    claim, mine = Claims(study, "runs/b").settle("prepare")
    assert mine and claim.generation == 2
    assert pid_alive(os.getpid()) and not pid_alive(_dead_pid())


def test_a_holder_on_another_machine_is_dead_when_its_heartbeat_stops():
    study = _study()
    first = Claims(study).take("finalize:3", 1)
    study._storage.set_study_user_attr(
        first.study_id, "holder", {"host": "elsewhere", "pid": 1, "out_dir": "/x"}
    )
    waiter = Claims(study, "runs/b", stale=0.3, poll=0.05)
    t = time.monotonic()
    claim, mine = waiter.settle("finalize:3")
    assert mine and claim.generation == 2
    assert 0.3 <= time.monotonic() - t < 5


def test_a_live_holder_is_waited_for_and_its_result_read():
    study = _study()
    holder = Claims(study, "runs/a", beat_every=0.05)
    claim, mine = holder.settle("finalize:3")
    assert mine
    # not waiting: another process has it, and it is not done
    other, mine = Claims(study, "runs/b").settle("finalize:3", wait=False)
    assert not mine and other.done is None and other.generation == 1

    def finish_later():
        with holder.holding(claim):
            time.sleep(0.3)
        holder.finish(claim, {"feasible": True})

    thread = threading.Thread(target=finish_later)
    thread.start()
    got, mine = Claims(study, "runs/b", poll=0.05).settle("finalize:3")
    thread.join()
    assert not mine and got.done["feasible"] is True
    assert got.beat >= 1  # the holder beat while it worked


def test_an_earlier_run_of_this_directory_runs_again_but_not_another_directorys():
    study = _study()
    first = Claims(study, "runs/a")
    claim, _ = first.settle("finalize:3")
    first.finish(claim, {})
    # the same directory, run again later: its stage runs again (a changed spec, say)
    again, mine = Claims(study, "runs/a").settle("finalize:3")
    assert mine and again.generation == 2
    Claims(study, "runs/a").finish(again, {})
    # another directory: the stage is done; not again unless forced, nor when not redoing
    done, mine = Claims(study, "runs/b").settle("finalize:3")
    assert not mine and done.generation == 2
    done, mine = Claims(study, "runs/a").settle("finalize:3", redo=False)
    assert not mine
    forced, mine = Claims(study, "runs/b").settle("finalize:3", force=True)
    assert mine and forced.generation == 3


def test_a_peer_claim_made_during_this_run_is_not_run_again():
    study = _study()
    late = Claims(study, "runs/a")  # started first; the peer claims after
    peer = Claims(study, "runs/a")
    claim, _ = peer.settle("finalize:3")
    peer.finish(claim, {})
    got, mine = late.settle("finalize:3")
    assert not mine and got.generation == 1  # same directory, but the claim is this round's


def test_ctrl_c_during_a_storage_write_waits_for_it():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with uninterrupted():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append("written")
    assert done == ["written"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
