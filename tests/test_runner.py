import torch

from autoprune import _runner as runner
from autoprune import spec


def test_a_trained_baseline_is_the_same_on_every_run(tmp_path):
    """The spec's train seed fixes the initial weights too, not only the data order."""
    path = tmp_path / "spec.yaml"
    path.write_text(
        "model: {name: mlp, options: {hidden: [16]}, train: {epochs: 1, seed: 3}}\n"
        "data: {name: digits}\n"
    )
    s = spec.load(path)
    data = runner.build_data(s)
    torch.manual_seed(1)  # whatever the global state, the result is the same
    a = runner.build_model(s, data, str(tmp_path / "a"), progress=False)
    torch.manual_seed(2)
    b = runner.build_model(s, data, str(tmp_path / "b"), progress=False)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
