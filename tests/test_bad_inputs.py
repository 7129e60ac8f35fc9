"""Bad input of every kind: one line naming what is wrong, exit status 2, no traceback, and
no training started.

Each case writes its files into a fresh directory, runs the command line in-process with
training made to fail the test if it starts, and checks the one line it printed.
"""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch

from autoprune import training
from autoprune.cli import main
from autoprune.models import create_model

BASE = """
model: {name: mlp, options: {hidden: [16]}, train: {epochs: 1}}
data: {name: digits}
scheme: {neuron_prune: {}}
objective: {minimize: macs}
search: {trials: 2}
"""


def npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def state_dict_bytes(model) -> bytes:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


X = np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32)
Y = np.arange(40) % 4
MLP = create_model("mlp", 10, (1, 8, 8), hidden=(16,))
OTHER = create_model("small_cnn", 10, (1, 8, 8), width=8)


def spec(text: str) -> dict:
    return {"spec.yaml": text}


def spec_npz(options: str, **files) -> dict:
    text = f"model: mlp\ndata: {{name: npz, options: {options}}}\nsearch: {{trials: 2}}\n"
    return {"spec.yaml": text, **files}


# (id, files, argv with SPEC and DIR standing for the spec and the case's directory, message)
CASES = [
    # -- the spec file itself ------------------------------------------------------------
    ("non-utf8 spec", {"spec.yaml": b"eps: 0.01\nmodel: \xff\xfe\n"}, ["validate"], "UTF-8"),
    ("not yaml", spec("model: [unclosed\n"), ["validate"], "is not valid YAML"),
    ("a list", spec("- 1\n- 2\n"), ["validate"], "must hold a mapping"),
    ("duplicate key", spec("eps: 0.01\neps: 0.02\n"), ["validate"], "eps: duplicate key"),
    ("dup nested key", spec("search: {trials: 2, trials: 3}\n"), ["validate"], "search.trials"),
    ("unknown top key", spec("epss: 0.01\n"), ["validate"], "epss: unknown key (did you mean"),
    ("eps as string", spec("eps: 1e-2\n"), ["validate"], "eps: expected a number"),
    ("eps out of range", spec("eps: 1.5\n"), ["validate"], "eps: expected a number in [0, 1)"),
    ("relative not bool", spec("relative: maybe\n"), ["validate"], "relative: expected true"),
    # -- model ---------------------------------------------------------------------------
    ("unknown model", spec("model: resnet9000\n"), ["validate"], "model.name: unknown model"),
    (
        "model width word",
        spec("model: {name: small_cnn, options: {width: wide}}\n"),
        ["validate"],
        "model.options.width",
    ),
    (
        "model width zero",
        spec("model: {name: small_cnn, options: {width: 0}}\n"),
        ["validate"],
        "model.options.width",
    ),
    (
        "model unknown option",
        spec("model: {name: mlp, options: {depth: 3}}\n"),
        ["validate"],
        "model.options.depth: unknown key",
    ),
    ("torch.nn as model", spec("model: torch.nn:Linear\n"), ["validate"], "model.name"),
    ("stdlib as model", spec("model: os:getcwd\n"), ["validate"], "model.name"),
    ("missing module", spec("model: no_such_pkg.mod:build\n"), ["validate"], "model.name"),
    (
        "train epochs word",
        spec("model: {name: mlp, train: {epochs: ten}}\n"),
        ["validate"],
        "model.train.epochs",
    ),
    (
        "train lr negative",
        spec("model: {name: mlp, train: {lr: -1}}\n"),
        ["validate"],
        "model.train.lr",
    ),
    (
        "no epochs no ckpt",
        spec("model: {name: mlp, train: {epochs: 0}}\n"),
        ["validate"],
        "model.train.epochs",
    ),
    (
        "ckpt missing",
        spec("model: {name: mlp, checkpoint: nope.pt}\n"),
        ["validate"],
        "model.checkpoint: file not found",
    ),
    (
        "ckpt text file",
        {"spec.yaml": "model: {name: mlp, checkpoint: ck.pt}\n", "ck.pt": "hello"},
        ["validate"],
        "is not a PyTorch checkpoint",
    ),
    (
        "ckpt pickled model",
        {
            "spec.yaml": "model: {name: mlp, options: {hidden: [16]}, checkpoint: ck.pt}\n",
            "ck.pt": pickle.dumps(MLP),
        },
        ["validate"],
        "holds pickled Python objects (a whole model?)",
    ),
    (
        "ckpt other arch",
        {
            "spec.yaml": "model: {name: mlp, options: {hidden: [16]}, checkpoint: ck.pt}\n",
            "ck.pt": state_dict_bytes(OTHER),
        },
        ["validate"],
        "does not fit the model: its keys are",
    ),
    (
        "ckpt truncated",
        {
            "spec.yaml": "model: {name: mlp, options: {hidden: [16]}, checkpoint: ck.pt}\n",
            "ck.pt": state_dict_bytes(MLP)[:100],
        },
        ["validate"],
        "is a damaged or truncated PyTorch checkpoint",
    ),
    ("3-channel model, 1-channel data", spec("model: resnet18\n"), ["validate"], "model"),
    (
        "squeezenet on 8x8",
        spec("model: squeezenet1_1\ndata: {name: digits, options: {channels: 3}}\n"),
        ["validate"],
        "model: squeezenet1_1 cannot run on the data's input of shape (3, 8, 8)",
    ),
    # -- data ----------------------------------------------------------------------------
    ("unknown data", spec("data: cifar100\n"), ["validate"], "data.name: unknown dataset"),
    (
        "data root missing",
        spec("data: {name: fashion_mnist, root: /no/such}\n"),
        ["validate"],
        "data.root",
    ),
    ("npz missing file", spec_npz("{train: nope.npz}"), ["validate"], "data.options.train"),
    (
        "npz without y",
        spec_npz("{train: d.npz}", **{"d.npz": npz(x=X)}),
        ["validate"],
        "data.options.train",
    ),
    (
        "npz length mismatch",
        spec_npz("{train: d.npz}", **{"d.npz": npz(x=X, y=Y[:30])}),
        ["validate"],
        "data.options.train",
    ),
    (
        "npz one-hot labels",
        spec_npz("{train: d.npz}", **{"d.npz": npz(x=X, y=np.eye(4)[Y])}),
        ["validate"],
        "data.options.train",
    ),
    (
        "npz float labels",
        spec_npz("{train: d.npz}", **{"d.npz": npz(x=X, y=Y + 0.5)}),
        ["validate"],
        "data.options.train",
    ),
    (
        "npz not an npz",
        spec_npz("{train: d.npz}", **{"d.npz": "text"}),
        ["validate"],
        "is not an .npz archive",
    ),
    (
        "val_fraction 1",
        spec("data: {name: digits, options: {val_fraction: 1.0}}\n"),
        ["validate"],
        "data.options.val_fraction",
    ),
    (
        "val_fraction word",
        spec("data: {name: digits, options: {val_fraction: half}}\n"),
        ["validate"],
        "data.options.val_fraction",
    ),
    (
        "data batch zero",
        spec("data: {name: digits, batch_size: 0}\n"),
        ["validate"],
        "data.batch_size",
    ),
    (
        "empty image folder",
        {"spec.yaml": "data: {name: image_folder, options: {root: imgs}}\n", "imgs/a/.keep": ""},
        ["validate"],
        "data.options.root",
    ),
    (
        "png not images",
        {
            "spec.yaml": "data: {name: image_folder, options: {root: imgs}}\n",
            "imgs/a/1.png": "not a png",
            "imgs/b/2.png": "nor this",
        },
        ["validate"],
        "data.options.root",
    ),
    # -- scheme --------------------------------------------------------------------------
    ("unknown scheme", spec("scheme: filter\n"), ["validate"], "scheme.filter: unknown scheme"),
    (
        "sparsity 1.5",
        spec("scheme: {filter_prune: {sparsity: 1.5}}\n"),
        ["validate"],
        "scheme.filter_prune.sparsity",
    ),
    (
        "seed word",
        spec("scheme: {filter_prune: {seed: abc}}\n"),
        ["validate"],
        "scheme.filter_prune.seed",
    ),
    (
        "criterion case",
        spec("scheme: {filter_prune: {criterion: L1}}\n"),
        ["validate"],
        "did you mean 'l1'",
    ),
    (
        "include matches nothing",
        spec("scheme: {prune: {include: 'nosuch*'}}\n"),
        ["validate"],
        "scheme.prune.include",
    ),
    (
        "sparsity pattern nothing",
        spec("scheme: {prune: {sparsity: {'nosuch*': 0.5}}}\n"),
        ["validate"],
        "scheme.prune.sparsity",
    ),
    ("quantize alone", spec("scheme: quantize\n"), ["validate"], "scheme"),
    (
        "round_to zero",
        spec("scheme: {filter_prune: {round_to: 0}}\n"),
        ["validate"],
        "scheme.filter_prune.round_to",
    ),
    # -- objective -----------------------------------------------------------------------
    ("unknown objective", spec("objective: speed\n"), ["validate"], "objective"),
    (
        "batch_size word",
        spec("objective: {maximize: throughput, batch_size: large}\n"),
        ["validate"],
        "objective.throughput.batch_size",
    ),
    (
        "batch_size zero",
        spec("objective: {maximize: throughput, batch_size: 0}\n"),
        ["validate"],
        "objective.throughput.batch_size",
    ),
    (
        "latency threads 0",
        spec("objective: {minimize: latency, threads: 0}\n"),
        ["validate"],
        "objective.latency.threads",
    ),
    (
        "dtype unknown",
        spec("objective: {maximize: throughput, dtype: float8}\n"),
        ["validate"],
        "objective.throughput.dtype",
    ),
    ("stdlib objective", spec("objective: {maximize: 'os:getpid'}\n"), ["validate"], "objective"),
    # -- search --------------------------------------------------------------------------
    ("sampler case", spec("search: {sampler: TPE}\n"), ["validate"], "did you mean 'tpe'"),
    ("trials negative", spec("search: {trials: -1}\n"), ["validate"], "search.trials"),
    (
        "shape space, two objectives",
        spec("objective: [macs, params]\nsearch: {space: shape}\n"),
        ["search", "SPEC"],
        "search.space: 'shape' searches plans of one cost for one objective",
    ),
    (
        "bounds not json",
        {"spec.yaml": "search: {bounds: b.json}\n", "b.json": "{not json"},
        ["validate"],
        "search.bounds",
    ),
    (
        "bounds pattern nothing",
        spec("search: {bounds: {'nosuch*': [0.1, 0.5]}}\n"),
        ["validate"],
        "search.bounds",
    ),
    ("storage scheme", spec("search: {storage: 'nosuchdb://x'}\n"), ["validate"], "search.storage"),
    (
        "storage missing dir",
        spec("search: {storage: 'sqlite:////no/such/dir/s.db'}\n"),
        ["validate"],
        "search.storage",
    ),
    # -- recovery and sensitivity --------------------------------------------------------
    (
        "momentum string",
        spec("recovery: {finetune: {momentum: '0.9'}}\n"),
        ["validate"],
        "recovery.finetune.momentum",
    ),
    ("lr nan", spec("recovery: {finetune: {lr: .nan}}\n"), ["validate"], "recovery.finetune.lr"),
    (
        "epochs inf",
        spec("recovery: {finetune: {epochs: .inf}}\n"),
        ["validate"],
        "recovery.finetune.epochs",
    ),
    (
        "sensitivity level 1.5",
        spec("sensitivity: {levels: [1.5]}\n"),
        ["validate"],
        "sensitivity.levels",
    ),
    # -- the command line ----------------------------------------------------------------
    (
        "out is a file",
        {**spec(BASE), "out.txt": "x"},
        ["search", "SPEC", "--out", "DIR/out.txt"],
        "--out",
    ),
    ("trials flag zero", spec(BASE), ["search", "SPEC", "--trials", "0"], "--trials"),
    ("device nonsense", spec(BASE), ["search", "SPEC", "--device", "tpu"], "device"),
    ("cuda without one", spec(BASE), ["search", "SPEC", "--device", "cuda"], "device"),
    (
        "storage flag bad",
        spec(BASE),
        ["search", "SPEC", "--storage", "nosuchdb://x"],
        "search.storage",
    ),
    (
        "report truncated",
        {"run/result.json": '{"format": "autoprune.resu'},
        ["report", "DIR/run"],
        "result.json",
    ),
    (
        "export truncated model",
        {"run/result.json": "{}", "run/model.pt": "x"},
        ["export", "DIR/run", "--format", "pt2"],
        "run",
    ),
    ("export no run", {}, ["export", "DIR/nope", "--format", "pt2"], "no saved result"),
    ("search on a bad spec", spec("eps: 2\n"), ["search", "SPEC"], "eps:"),
]


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(training, "train", refuse)
    monkeypatch.setattr("autoprune._runner.train", refuse)


@pytest.mark.parametrize("files, argv, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(files, argv, message, tmp_path, capsys, no_training):
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    if argv[0] == "validate":
        argv = argv + ["SPEC"]
    argv = [
        a.replace("SPEC", str(tmp_path / "spec.yaml")).replace("DIR", str(tmp_path)) for a in argv
    ]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err, err


def test_there_are_at_least_sixty_cases():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)


def _compressor(model, data, eps=0.01, **kw):
    import autoprune as ap

    return ap.Compressor(model, "macs", eps, data=data, n_trials=1, progress=False, **kw)


API_CASES = [
    ("FineTune epochs inf", lambda ap: ap.FineTune(epochs=float("inf")), "finetune.epochs"),
    ("FineTune lr nan", lambda ap: ap.FineTune(lr=float("nan")), "finetune.lr"),
    (
        "create_model width 0",
        lambda ap: ap.create_model("small_cnn", 10, (1, 8, 8), width=0),
        "width: expected a positive integer",
    ),
    (
        "train epochs -1",
        lambda ap: ap.train(
            torch.nn.Linear(2, 2), [(torch.randn(2, 2), torch.tensor([0, 1]))], epochs=-1
        ),
        "epochs: expected",
    ),
    ("train empty loader", lambda ap: ap.train(torch.nn.Linear(2, 2), []), "loader is empty"),
    ("Throughput batch 0", lambda ap: ap.objectives.Throughput(0), "throughput.batch_size"),
    ("Latency threads 0", lambda ap: ap.objectives.Latency(threads=0), "latency.threads"),
    ("empty loaders", lambda ap: _compressor(MLP, ([], [], [])), "data: the train loader is empty"),
    ("eps 1", lambda ap: _compressor(MLP, ap.load_data("digits"), eps=1), "eps"),
    ("device tpu", lambda ap: _compressor(MLP, ap.load_data("digits"), device="tpu"), "device"),
]


@pytest.mark.parametrize("call, message", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_bad_api_call_is_an_autoprune_error(call, message):
    import autoprune as ap

    with pytest.raises(ap.AutopruneError, match=message.replace("(", r"\(")):
        call(ap)
