"""The suite's base models: four architectures trained to convergence on Fashion-MNIST.

Each built-in architecture (``vgg_small``, ``mobilenet_small``, ``densenet_small``,
``resnet10``) is trained with one recipe (below) for ``--epochs`` epochs, and, from the same
initial weights, for twice as many. The first is the suite's base; it counts as converged
when the second's validation and test accuracies are within 0.3 points of its own. The
checkpoints are written to ``benchmarks/checkpoints/<arch>.pt`` with their sha256 in
``benchmarks/checkpoints/bases.json`` (with the recipe and the accuracies), so every suite
run starts from the same weights.

Recipe: SGD, momentum 0.9, weight decay 5e-4, learning rate 0.05 with cosine decay to
zero, batch 128, no augmentation, seed 0; 10% of the official training set held out for
validation (seed 0).

    python benchmarks/bases.py --data-root ../shared/data/fashion-mnist [--arch vgg ...]
        [--epochs 15]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time

import torch

import autoprune as ap
from autoprune.metrics import format_table
from autoprune.training import seed_everything

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKPOINTS = os.path.join(HERE, "checkpoints")
MANIFEST = os.path.join(CHECKPOINTS, "bases.json")

# suite name: (built-in model name, its options)
ARCHS = {
    "vgg": ("vgg_small", {"width": 16, "hidden": 512}),
    "mobilenet": ("mobilenet_small", {"width": 16}),
    "densenet": ("densenet_small", {"growth": 12, "layers": [4, 4, 4]}),
    "resnet10": ("resnet10", {"width": 16}),
}
RECIPE = {"lr": 0.05, "batch_size": 128, "momentum": 0.9, "weight_decay": 5e-4, "seed": 0}
TOLERANCE = 0.003  # twice the epochs must stay within 0.3 points


def fashion_mnist(root: str, limit: int | None = None) -> ap.data.Data:
    """Fashion-MNIST from ``root``'s npz files: 10% of the training set for validation."""
    for name in ("train.npz", "test.npz"):
        if not os.path.isfile(os.path.join(root, name)):
            sys.exit(f"bases: no {name} in {root}; give --data-root the Fashion-MNIST directory")
    return ap.data.npz(
        os.path.join(root, "train.npz"),
        os.path.join(root, "test.npz"),
        val_fraction=0.1,
        seed=0,
        limit=limit,
    )


def build(arch: str, data: ap.data.Data) -> torch.nn.Module:
    name, options = ARCHS[arch]
    seed_everything(RECIPE["seed"])  # the same initial weights for both trainings
    return ap.create_model(name, data.num_classes, data.input_shape, **options)


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def checkpoint(arch: str) -> str:
    return os.path.join(CHECKPOINTS, f"{arch}.pt")


def load_base(arch: str, data: ap.data.Data) -> torch.nn.Module:
    """The committed base of ``arch``, its sha256 checked against the manifest."""
    with open(MANIFEST, encoding="utf-8") as f:
        manifest = json.load(f)
    entry = manifest["models"][arch]
    path = checkpoint(arch)
    if sha256(path) != entry["sha256"]:
        sys.exit(f"{path} does not match its sha256 in {MANIFEST}; check it out again")
    model = build(arch, data)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def train_one(arch: str, data: ap.data.Data, epochs: float) -> tuple[torch.nn.Module, dict]:
    model = build(arch, data)
    loaders = data.loaders(batch_size=RECIPE["batch_size"], seed=RECIPE["seed"])
    t = time.perf_counter()
    ap.train(
        model,
        loaders.train,
        epochs=epochs,
        lr=RECIPE["lr"],
        momentum=RECIPE["momentum"],
        weight_decay=RECIPE["weight_decay"],
        seed=RECIPE["seed"],
        progress=True,
        desc=f"{arch} {epochs:g} ep",
    )
    seconds = time.perf_counter() - t
    row = {
        "epochs": epochs,
        "val": ap.evaluate(model, loaders.val).accuracy,
        "test": ap.evaluate(model, loaders.test).accuracy,
        "minutes": round(seconds / 60, 1),
        "params": sum(p.numel() for p in model.parameters()),
    }
    return model.eval(), row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_root = os.path.join(HERE, "../../shared/data/fashion-mnist")
    parser.add_argument("--data-root", default=default_root)
    parser.add_argument("--arch", nargs="+", choices=sorted(ARCHS), default=list(ARCHS))
    parser.add_argument("--epochs", type=float, default=15)
    args = parser.parse_args()
    data = fashion_mnist(args.data_root)
    os.makedirs(CHECKPOINTS, exist_ok=True)
    manifest = {"recipe": RECIPE, "models": {}}
    if os.path.isfile(MANIFEST):
        with open(MANIFEST, encoding="utf-8") as f:
            manifest = json.load(f)
    rows = []
    for arch in args.arch:
        model, base = train_one(arch, data, args.epochs)
        _, longer = train_one(arch, data, 2 * args.epochs)
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        tmp = checkpoint(arch) + ".tmp"
        with open(tmp, "wb") as f:
            f.write(buf.getvalue())
        os.replace(tmp, checkpoint(arch))
        converged = all(abs(longer[k] - base[k]) <= TOLERANCE for k in ("val", "test"))
        name, options = ARCHS[arch]
        manifest["models"][arch] = {
            "model": name,
            "options": options,
            "sha256": sha256(checkpoint(arch)),
            "base": base,
            "twice": longer,
            "converged": converged,
        }
        manifest["recipe"] = RECIPE
        tmp = MANIFEST + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
        os.replace(tmp, MANIFEST)
        rows.append(
            {
                "arch": arch,
                "params": base["params"],
                "epochs": args.epochs,
                "val": base["val"],
                "test": base["test"],
                "2x epochs val": longer["val"],
                "2x epochs test": longer["test"],
                "test gap (pts)": 100 * (longer["test"] - base["test"]),
                "converged": converged,
                "min": base["minutes"],
            }
        )
        print(format_table(rows[-1:]), flush=True)
    print(format_table(rows))


if __name__ == "__main__":
    main()
