"""Records round-trip through their JSON forms (no training)."""

import json

from autoprune.compress.measure import Measurements
from autoprune.compress.records import LevelRecord, Preparation
from autoprune.compress.settings import RunSettings
from autoprune.compress.space import Unit


def through_json(data):
    return json.loads(json.dumps(data))


def test_level_record_round_trip_and_the_old_spelling():
    r = LevelRecord(0.5, 0.45, 0.004, True, val_accuracy=0.91, proxy_drop=0.03, seconds=2.0)
    assert LevelRecord.from_dict(through_json(r.to_dict())) == r
    old = {"level": 0.5, "mean_sparsity": 0.45, "finetuned_drop": 0.004, "holds": True}
    assert LevelRecord.from_dict(old).drop == 0.004


def test_preparation_round_trip():
    prep = Preparation(
        units=[
            Unit("conv1", 16, 0.0, 0.9, "filter_prune"),
            Unit("prune:fc", 100, 0.1, 0.99, "prune"),
        ],
        tau=0.05,
        warm=[0.5, 0.75],
        level_range=(0.35, 0.8),
        calibration=[LevelRecord(0.5, 0.45, 0.0, True, proxy_drop=0.02)],
        prior={"conv1": [0.0, 0.5, 1.0]},
        sensitivity={"base": 0.9},
        target_level=0.625,
        references={"global": {"offset_000": -0.5, "offset_001": 0.25}},
    )
    again = Preparation.from_dict(through_json(prep.to_dict()))
    assert again == prep
    assert again.held == 0.5 and again.units[1].layer == "fc"


def test_run_settings_round_trip_keeps_the_json_keys():
    s = RunSettings(
        environment={"torch": "2", "threads": 2, "device": "cpu"},
        eps=0.01,
        tau=0.03,
        calibration=[LevelRecord(0.5, 0.45, 0.0, True)],
        refinement=[LevelRecord(0.6, 0.55, 0.008, True, val_accuracy=0.9)],
        extra={"title": "t"},
    )
    data = through_json(s.to_dict())
    assert data["threads"] == 2 and data["title"] == "t" and data["calibration"][0]["level"] == 0.5
    again = RunSettings.from_dict(data)
    assert again == s
    assert again["tau"] == 0.03 and again.get("missing", 1) == 1 and "eps" in again


def test_measurements_read_as_a_mapping():
    m = Measurements(val_accuracy=0.9, params=10.0, speedup=2.0)
    assert dict(m) == {"val_accuracy": 0.9, "params": 10.0, "speedup": 2.0}
    assert m["params"] == 10.0 and "macs" not in m and m.get("macs") is None
    assert Measurements.from_dict(through_json(m.to_dict())) == m


def test_a_masked_structured_plan_under_a_speed_objective_is_a_warning_not_a_note():
    import torch

    from autoprune.compress.result import CompressionResult
    from autoprune.plan import GroupPlan, Plan

    plan = Plan()
    plan.set_group(GroupPlan("filter_prune", "conv1", ["conv1"], 8, removed=[0, 1]))
    timed = RunSettings(objectives=[{"name": "throughput", "search": "measured ratio"}])
    exact = RunSettings(objectives=[{"name": "macs", "search": "exact"}])
    note = "kept the masked model: physical and masked outputs differ (max |diff| 4e-05)"
    m = Measurements(val_accuracy=0.9)

    def result(settings, plan):
        return CompressionResult(
            torch.nn.Linear(1, 1), plan, True, m, m, {}, notes=[note], settings=settings
        )

    first = result(timed, plan).summary().splitlines()[0]
    assert first.startswith("feasible; WARNING: the structured plan stayed MASKED")
    assert "outputs differ" in first
    assert result(exact, plan).masked_warning() is None  # MACs count the mask's zeros too
    physical = Plan.from_dict(plan.to_dict())
    physical.groups["conv1"].materialized = [0, 1]
    assert result(timed, physical).masked_warning() is None
