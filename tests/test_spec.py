import pytest
import yaml

from autoprune import spec
from autoprune.spec import SpecError


def write(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_fill_in(tmp_path):
    s = spec.load(write(tmp_path, "eps: 0.02\n"))
    r = s.resolved
    assert r["model"]["name"] == "small_cnn" and r["data"]["name"] == "digits"
    assert r["scheme"] == [{"filter_prune": {}}]
    assert r["objective"] == [{"maximize": "throughput"}]
    assert r["search"]["sampler"] == "tpe" and r["recovery"] == {"finetune": {}}
    assert r["output"]["dir"] == "runs/spec"
    assert yaml.safe_load(s.to_yaml())["eps"] == 0.02


def test_examples_are_valid():
    import glob
    import os

    root = os.path.join(os.path.dirname(__file__), "..", "examples")
    files = sorted(glob.glob(os.path.join(root, "*.yaml")))
    assert {os.path.basename(f) for f in files} >= {
        "digits.yaml",
        "fashion-mnist.yaml",
        "torchvision.yaml",
    }
    for f in files:
        if "fashion" in f and not os.path.isdir(os.path.join(root, "..", "..", "shared")):
            continue  # needs ../shared beside the clone
        spec.load(f)


BAD = [
    ("epss: 0.1", "epss: unknown key (did you mean 'eps'?)"),
    ("eps: -0.1", r"eps: expected a number in [0, 1), got -0.1"),
    ("eps: high", "eps: expected a number in [0, 1), got 'high'"),
    (
        "scheme: {filter_prune: {sparsity: 1.5}}",
        "scheme.filter_prune.sparsity: expected a number in [0, 1), got 1.5",
    ),
    (
        "scheme: {filter_prune: {sparsty: 0.5}}",
        "scheme.filter_prune.sparsty: unknown key (did you mean 'sparsity'?)",
    ),
    (
        "scheme: {filter_prun: {}}",
        "scheme.filter_prun: unknown scheme (did you mean 'filter_prune'?)",
    ),
    ("scheme: {prune: {criterion: l3}}", "scheme.prune.criterion"),
    ("scheme: [{prune: {}}, {blok_prune: {}}]", "scheme[1].blok_prune: unknown scheme"),
    (
        "scheme: [{prune: {}}, {quantize: {bits: 12}}]",
        "scheme[1].quantize.bits: expected an integer from 1 to 8, got 12",
    ),
    ("model: {name: smal_cnn}", "model.name: unknown model 'smal_cnn' (did you mean 'small_cnn'?)"),
    (
        "model: {name: resnet10, options: {widht: 8}}",
        "model.options.widht: unknown key (did you mean 'width'?)",
    ),
    ("model: {name: mlp, checkpoint: nope.pt}", "model.checkpoint: file not found"),
    ("model: {name: mlp, train: {epochs: -1}}", "model.train.epochs: expected a number"),
    ("data: {name: digit}", "data.name: unknown dataset 'digit' (did you mean 'digits'?)"),
    ("data: {name: npz, options: {train: missing.npz}}", "data.options.train: not found"),
    (
        "data: {name: npz, root: /no/such/dir, options: {train: a.npz}}",
        "data.options.train: not found",
    ),
    ("data: {batch_size: 0}", "data.batch_size: expected an integer in [1, inf)"),
    ("objective: speed", "objective.maximize: unknown objective 'speed'"),
    (
        "objective: {maximize: throughput, batch: 8}",
        "objective.batch: unknown key (did you mean 'batch_size'?)",
    ),
    (
        "objective: {minimize: size, values: int8}",
        "objective.size.values: expected 'fp32' or 'fp16'",
    ),
    (
        "objective: {maximise: throughput}",
        "objective: expected 'maximize: NAME' or 'minimize: NAME'",
    ),
    ("search: {sampler: bayes}", "search.sampler: unknown sampler 'bayes'"),
    ("search: {trials: -1}", "search.trials: expected an integer in [0, inf)"),
    ("search: {trials: null}", "search.trials: give a number of trials or a search.timeout"),
    ("search: {bounds: [0.5, 1.2]}", r"search.bounds: expected a number in [0, 1), got 1.2"),
    ("search: {bounds: {conv1: [0.8, 0.2]}}", "search.bounds['conv1']: expected low <= high"),
    ("search: {space: grid}", "search.space: expected one of"),
    ("search: {prior: lamp}", "search.prior: expected one of"),
    (
        "search: {evaluation: {calibration_threshold: mid}}",
        "search.evaluation.calibration_threshold: expected one of",
    ),
    (
        "search: {evaluation: {bn_batch: 3}}",
        "search.evaluation.bn_batch: unknown key (did you mean 'bn_batches'?)",
    ),
    ("recovery: {lc: {mu_init: -1}}", "recovery.lc.mu_init: expected a positive number"),
    (
        "recovery: {finetune: {epoch: 3}}",
        "recovery.finetune.epoch: unknown key (did you mean 'epochs'?)",
    ),
    ("recovery: sgd", "recovery.sgd: unknown recovery"),
    (
        "recovery: {finetune: {gradual: 2}}",
        "recovery.finetune.gradual: expected a number in [0, 1], got 2",
    ),
    ("sensitivity: {levels: [0.5, 1.0]}", r"sensitivity.levels[1]: expected a number in [0, 1)"),
    ("output: {report: maybe}", "output.report: expected true or false, got 'maybe'"),
    ("[1, 2]", "must hold a mapping of sections"),
    ("eps: [0.1", "is not valid YAML"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_bad_specs_name_the_key(tmp_path, text, message):
    with pytest.raises(SpecError) as info:
        spec.load(write(tmp_path, text))
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="spec: file not found"):
        spec.load(tmp_path / "none.yaml")


def test_paths_resolve_against_the_spec_and_data_root(tmp_path):
    import numpy as np

    d = tmp_path / "data"
    d.mkdir()
    np.savez(d / "train.npz", x=np.zeros((10, 4, 4), np.uint8), y=np.arange(10) % 2)
    text = "data: {name: npz, root: data, options: {train: train.npz}}\n"
    s = spec.load(write(tmp_path, text))
    assert s.resolved["data"]["options"]["train"] == str(d / "train.npz")
    other = tmp_path / "elsewhere"
    other.mkdir()
    with pytest.raises(SpecError, match="data.options.train: not found"):
        spec.load(write(tmp_path, text), {"data.root": str(other)})


def test_round_to_in_a_spec():
    s = spec.validate({"scheme": {"filter_prune": {"round_to": 8}}})
    assert s.resolved["scheme"] == [{"filter_prune": {"round_to": 8}}]
    with pytest.raises(SpecError, match=r"^scheme.filter_prune.round_to: expected 'auto' or an"):
        spec.validate({"scheme": {"filter_prune": {"round_to": 0}}})
    auto = spec.validate({"scheme": {"filter_prune": {"round_to": "auto"}}})
    assert auto.resolved["scheme"] == [{"filter_prune": {"round_to": "auto"}}]
