"""Each scheme operator on a small CNN trained on the embedded digits data.

    python examples/prune_operators.py

Trains for a few seconds, prunes a copy with every operator (filters physically), fine-tunes
each briefly, prints accuracy and measurements, and saves the unstructured one in the sparse
format.
"""

import copy
import os
import tempfile

import autoprune as ap
from autoprune import encoding, metrics

data = ap.load_data("digits")
loaders = data.loaders(batch_size=64, seed=0)
model = ap.create_model("small_cnn", data.num_classes, data.input_shape, width=16)
ap.train(model, loaders.train, epochs=15, seed=0)
x = data.example_input()
print(f"original: test accuracy {ap.evaluate(model, loaders.test).accuracy:.3f}")

schemes = {
    "prune 80%": ap.Prune(0.8),
    "filter_prune 50% (physical)": ap.FilterPrune(0.5, physical=True),
    "neuron_prune 50% (physical)": ap.NeuronPrune(0.5, physical=True),
    "block_prune 75% (4x4)": ap.BlockPrune(0.75, block=(4, 4)),
    "filters 25% then weights 80%": ap.Compose(
        [ap.FilterPrune(0.25, physical=True), ap.Prune(0.8)]
    ),
}
rows = []
for name, scheme in schemes.items():
    pruned = copy.deepcopy(model)
    plan = scheme.apply(pruned, x)
    ap.recalibrate_bn(pruned, loaders.train)
    ap.train(pruned, loaders.train, epochs=2, lr=0.01, seed=0)
    summary = metrics.summarize(pruned, x)
    rows.append(
        {
            "scheme": name,
            "test_acc": ap.evaluate(pruned, loaders.test).accuracy,
            "params": summary.nonzero_params,
            "macs": summary.macs,
            "sparse_fp16_bytes": summary.sparse_bytes_fp16,
            "speedup": metrics.compare_speed(model, pruned, x, batch_size=64, rounds=5).speedup,
        }
    )
    if name.startswith("prune"):
        path = os.path.join(tempfile.gettempdir(), "small_cnn_pruned.apz")
        size = encoding.save(pruned, path, values="fp16")
        print(f"saved {path}: {size} bytes (dense fp32: {metrics.dense_size(model)} bytes)")

print(metrics.format_table(rows))
pruned = copy.deepcopy(model)
ap.filter_prune(pruned, 0.5, x, physical=True)
print()
print(metrics.format_table(metrics.layer_report(model, pruned, x)))
