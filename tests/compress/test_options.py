"""Options and bounds, checked once where they are made (no training)."""

import json

import pytest

import autoprune as ap
from autoprune.compress import Bounds, Budget, Sensitivity
from autoprune.errors import AutopruneError, ConfigError


def test_bounds_take_five_shapes_in_one_form(tmp_path):
    assert Bounds.parse(None).for_unit("conv1", 0.9) == (0.0, 0.9)
    pair = Bounds.parse((0.1, 0.6))
    assert pair.for_unit("anything", 0.9) == (0.1, 0.6) and pair.setting() == [0.1, 0.6]
    per = Bounds.parse({"conv*": (0.0, 0.5), "conv2": [0.2, 0.3]})
    assert per.for_unit("conv1", 0.9) == (0.0, 0.5)
    assert per.for_unit("conv2", 0.9) == (0.2, 0.3)  # the last match wins
    assert per.for_unit("fc", 0.9) == (0.0, 0.9)
    assert per.for_unit("prune:conv1", 0.995, bare="conv1") == (0.0, 0.5)
    assert per.setting() == {"conv*": [0.0, 0.5], "conv2": [0.2, 0.3]}
    assert Bounds.parse("sensitivity").from_sensitivity
    sens = Sensitivity(base=0.9, levels=[0.5], accuracy={"conv1": [0.85]})
    given = Bounds.parse(sens)
    assert given.from_sensitivity and given.sensitivity is sens
    assert given.setting() == "sensitivity (given)"
    sens.save(tmp_path / "s.json")
    loaded = Bounds.parse(str(tmp_path / "s.json"))
    assert loaded.sensitivity.accuracy == {"conv1": [0.85]}


@pytest.mark.parametrize(
    "value, message",
    [
        ((0.5, 0.2), r"bounds: expected low <= high, got \[0.5, 0.2\]"),
        ((0.5, 1.0), r"bounds: expected a number in \[0, 1\), got 1"),
        ({"conv1": 0.5}, r"bounds\['conv1'\]: expected \[low, high\], got 0.5"),
        ("sensitivy", "bounds: expected .*'sensitivity'"),
        ((0.1, float("nan")), r"bounds: expected a number in \[0, 1\)"),
    ],
)
def test_bad_bounds_name_the_parameter(value, message):
    with pytest.raises(ConfigError, match=message):
        Bounds.parse(value)


def test_a_bounds_file_that_is_not_json_is_an_error(tmp_path):
    path = tmp_path / "s.json"
    path.write_text("not json")
    with pytest.raises(AutopruneError, match="s.json"):
        Bounds.parse(str(path))
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(AutopruneError, match="sensitivity results"):
        Bounds.parse(str(path))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Budget(n_trials=None, timeout=None), "give a number of trials, a timeout"),
        (lambda: Budget(n_trials=-1), r"n_trials: expected an integer in \[0, inf\)"),
        (lambda: Budget(timeout=0), "timeout: expected a positive number, got 0"),
        (lambda: ap.ProxyOptions(finetune_epochs=float("inf")), "proxy.finetune_epochs"),
        (lambda: ap.ProxyOptions(finetune_lr=0), "proxy.finetune_lr"),
        (lambda: ap.ProxyOptions(val_batches=0), "proxy.val_batches"),
        (lambda: ap.CalibrationOptions(steps=-1), "calibration.steps"),
        (lambda: ap.CalibrationOptions(enabled="yes"), "calibration.enabled"),
        (lambda: ap.SensitivityOptions(levels=()), "sensitivity.levels: expected at least"),
        (lambda: ap.SensitivityOptions(levels=(0.5, 1.0)), r"sensitivity.levels\[1\]"),
        (lambda: ap.SensitivityOptions(threshold=2), "sensitivity.threshold"),
    ],
)
def test_bad_options_name_the_parameter(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_sensitivity_threshold_defaults_to_four_eps_within_limits():
    assert ap.SensitivityOptions().threshold_for(0.001) == 0.02
    assert ap.SensitivityOptions().threshold_for(0.01) == 0.04
    assert ap.SensitivityOptions().threshold_for(0.1) == 0.2
    assert ap.SensitivityOptions(threshold=0.07).threshold_for(0.01) == 0.07
