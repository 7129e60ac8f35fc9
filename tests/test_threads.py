"""The training loop's thread count under load, on a fake clock (and one real loop)."""

import logging

import pytest
import torch

from autoprune import evaluate, recalibrate_bn, train
from autoprune._threads import ThreadPicker
from autoprune.data import digits
from autoprune.models import create_model


@pytest.fixture(autouse=True)
def no_earlier_choice():
    ThreadPicker.decided.clear()
    yield
    ThreadPicker.decided.clear()


class Loop:
    """A training loop whose step takes ``seconds[threads]`` on a fake clock."""

    def __init__(self, threads: int, seconds: dict[int, float], now=0.0, **options) -> None:
        self.now, self.seconds, self.used = now, dict(seconds), []
        self.picker = ThreadPicker(
            threads, clock=lambda: self.now, set_threads=self.used.append, **options
        )

    def steps(self, n: int) -> None:
        for _ in range(n):
            self.now += self.seconds[self.picker.threads]
            self.picker.step_done()


def test_fewer_threads_when_they_train_faster_by_the_margin(caplog):
    loop = Loop(2, {2: 1.0, 1: 0.3})  # one core busy elsewhere: 2 threads wait on it
    with caplog.at_level(logging.INFO, logger="autoprune"):
        loop.steps(1 + 4)  # the warm-up step, then 4 on 2 threads
        assert loop.used == [1]  # the probe's steps on 1 thread
        loop.steps(4)
    assert loop.picker.threads == 1
    assert "training on 1 of 2 CPU threads: a step took 1.000 s on 2 and 0.300 s on 1" in (
        caplog.text
    )
    loop.steps(50)  # no probe before a minute has passed
    assert loop.used == [1]
    loop.picker.close()
    assert loop.used == [1, 2]


def test_the_configured_count_stays_unless_fewer_threads_are_clearly_faster():
    loop = Loop(4, {4: 1.0, 3: 0.9, 2: 0.8})  # candidates 4, 3 and 2; 1.25x is under 1.3x
    loop.steps(1 + 12)
    assert loop.picker.candidates == [4, 3, 2]
    assert loop.used == [3, 2, 4] and loop.picker.threads == 4


def test_steps_too_short_to_matter_are_never_probed():
    loop = Loop(2, {2: 0.01, 1: 0.001})
    loop.steps(100)
    assert loop.used == []  # not even the probe's: small models train bit-for-bit as before


def test_the_choice_is_measured_again_and_follows_the_load(caplog):
    loop = Loop(2, {2: 1.0, 1: 0.5}, every=10.0)
    with caplog.at_level(logging.INFO, logger="autoprune"):
        loop.steps(1 + 8)
        assert loop.picker.threads == 1
        loop.steps(40)  # 10 s later a new probe, the same choice: not said again
        assert caplog.text.count("training on") == 1
        loop.seconds = {2: 0.2, 1: 0.35}  # the other process ended
        loop.steps(60)  # at the next probe, 2 threads win
    assert loop.picker.threads == 2 and loop.used[-1] == 2
    assert "training on all 2 CPU threads again" in caplog.text


def test_a_later_loop_starts_on_the_choice_without_probing():
    first = Loop(2, {2: 1.0, 1: 0.3})
    first.steps(1 + 8)
    first.picker.close()
    second = Loop(2, {2: 1.0, 1: 0.3}, now=10.0)  # within the first's minute
    assert second.used == [1] and second.picker.queue == []
    third = Loop(2, {2: 1.0, 1: 0.3}, now=100.0)  # a minute later, it probes again
    assert third.used == [] and third.picker.queue == [2] * 4 + [1] * 4


def test_one_thread_is_left_alone():
    loop = Loop(1, {1: 1.0})
    loop.steps(20)
    assert loop.used == [] and loop.picker.candidates == [1]


def test_train_runs_on_the_chosen_count_and_restores_the_configured_one():
    data = digits()
    model = create_model("mlp", data.num_classes, data.input_shape, hidden=(16,))
    threads = torch.get_num_threads()
    if threads < 2:
        pytest.skip("needs 2 CPU threads")
    ThreadPicker.decided[threads] = (1, float("inf"))  # as if a probe had just chosen 1
    seen = []
    train(
        model,
        data.loaders(batch_size=64).train,
        max_steps=3,
        after_step=lambda m: seen.append(torch.get_num_threads()),
    )
    assert seen == [1, 1, 1] and torch.get_num_threads() == threads


def test_evaluation_and_bn_recalibration_follow_training_s_choice_while_it_stands():
    data = digits()
    model = create_model("small_cnn", data.num_classes, data.input_shape, width=4)
    threads = torch.get_num_threads()
    if threads < 2:
        pytest.skip("needs 2 CPU threads")
    seen = []
    model.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    loader = data.loaders(batch_size=64).val
    ThreadPicker.decided[threads] = (1, float("inf"))
    evaluate(model, loader, max_batches=1)
    recalibrate_bn(model, loader, batches=1)
    assert seen == [1, 1] and torch.get_num_threads() == threads
    ThreadPicker.decided[threads] = (1, 0.0)  # a choice that no longer stands
    evaluate(model, loader, max_batches=1)
    assert seen[-1] == threads
