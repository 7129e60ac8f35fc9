"""Build ``report.md`` and a self-contained ``report.html`` from a run directory."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass

import torch
from torch import nn

from .. import __version__, metrics
from .._io import atomic_write
from ..compress import CompressionResult
from ..compress.settings import RunSettings
from ..deployment import Deployment
from ..errors import DataError
from ..models import rebuild
from ..plan import Plan
from . import plots
from .blocks import Block, fmt, markdown, page

SUMMARY = [
    ("val_accuracy", "validation accuracy"),
    ("test_accuracy", "test accuracy"),
    ("deployed_val_accuracy", "validation accuracy, deployed"),
    ("deployed_test_accuracy", "test accuracy, deployed"),
    ("params", "parameters"),
    ("nonzero_params", "nonzero parameters"),
    ("macs", "MACs per image"),
    ("dense_bytes", "size, dense fp32 (bytes)"),
    ("sparse_bytes", "size, sparse fp32 (bytes)"),
    ("sparse_bytes_fp16", "size, sparse fp16 (bytes)"),
    ("throughput", "throughput (images/s, batch 64)"),
    ("latency_ms", "latency (ms, batch 1)"),
]


def _load_original(run_dir: str, result: CompressionResult) -> nn.Module | None:
    spec = result.settings.model_spec
    path = os.path.join(run_dir, "original.pt")
    if spec is None or not os.path.isfile(path):
        return None
    original = rebuild(spec)
    original.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return original.eval()


@dataclass
class Run:
    """What the report's sections read: the result, its settings, the original model."""

    result: CompressionResult
    settings: RunSettings
    original: nn.Module | None
    example_input: torch.Tensor
    run_dir: str
    title: str


def build(run_dir: str | os.PathLike) -> tuple[str, str]:
    """Write ``report.md`` (with PNG files beside it) and ``report.html`` into ``run_dir``."""
    run_dir = os.fspath(run_dir)
    if not os.path.isfile(os.path.join(run_dir, "result.json")):
        raise DataError(f"no run in {run_dir}: result.json is missing (run autoprune search first)")
    result = CompressionResult.load(run_dir)
    settings = result.settings
    run = Run(
        result=result,
        settings=settings,
        original=_load_original(run_dir, result),
        example_input=torch.zeros(1, *settings.input_shape),
        run_dir=run_dir,
        title=settings.extra.get("title") or os.path.basename(os.path.abspath(run_dir)),
    )
    blocks: list[Block] = []
    for section in SECTIONS:
        blocks += section(run)
    md = markdown(blocks, run_dir)
    html_page = page(blocks, run.title)
    md_path = os.path.join(run_dir, "report.md")
    html_path = os.path.join(run_dir, "report.html")
    atomic_write(md_path, md.encode())
    atomic_write(html_path, html_page.encode())
    return md_path, html_path


def _heading(run: Run) -> list[Block]:
    result, settings = run.result, run.settings
    form = Deployment(**settings.deployment)
    within = f" (in float32 and in {form.dtype})" if form.lowers_precision else ""
    verdict = (
        "**Feasible**: the compressed model's validation accuracy is within eps of the "
        f"original's{within}."
        if result.feasible
        else "**Not feasible**: no plan kept accuracy within eps; the original model is returned."
    )
    objs = ", ".join(f"{o['direction']} {o['measured']}" for o in settings.objectives)
    warning = result.masked_warning()
    return [
        Block("h1", f"autoprune report: {run.title}"),
        Block(
            "p",
            f"{verdict}{f' **Warning**: {warning}.' if warning else ''} "
            f"Scheme: `{settings.scheme.get('op', '?')}`; objective: {objs}; "
            f"eps {settings.eps}{' (relative)' if settings.relative else ''}; "
            f"recovery: `{settings.recovery.get('name', '?')}`.",
        ),
    ]


def _summary(run: Run) -> list[Block]:
    result, settings = run.result, run.settings
    form = Deployment(**settings.deployment)
    rows = []
    for key, label in SUMMARY:
        if key in result.after:
            b, a = result.before.get(key), result.after[key]
            ratio = a / b if b else float("nan")
            rows.append([label, fmt(b), fmt(a), f"{ratio:.3f}x"])
    final = ", ".join(f"{k} {v:.3f}x" for k, v in result.objectives.items())
    blocks = [
        Block("h2", "Summary"),
        Block("table", ["metric", "original", "compressed", "ratio"], rows),
        Block(
            "p",
            f"Objectives, measured carefully at the end as ratios to the "
            f"original: {final}. Throughput and latency were timed interleaved with "
            f"the original (median of 20 rounds) on {settings.environment.get('threads')} "
            f"threads, {settings.environment.get('device')}, in {form.describe()}."
            + (
                f" Deployed accuracy is measured with the model and its inputs in {form.dtype}."
                if form.lowers_precision
                else ""
            ),
        ),
    ]
    if result.notes:
        blocks.append(Block("list", result.notes))
    return blocks


LAYER_HEAD = [
    "layer",
    "type",
    "shape before",
    "shape after",
    "sparsity",
    "params before",
    "nonzero after",
    "MACs before",
    "MACs after",
]
PLAN_HEAD = ["operator", "unit", "layers", "units", "original", "removed", "sparsity", "physical"]


def _per_layer(run: Run) -> list[Block]:
    blocks = [Block("h2", "Per layer")]
    if run.original is not None:
        layer_rows = metrics.layer_report(run.original, run.result.model, run.example_input)
        table = [
            [
                r.name,
                r.type,
                fmt(r.shape_before),
                fmt(r.shape_after),
                f"{r.sparsity:.3f}",
                fmt(r.params_before),
                fmt(r.params_after),
                fmt(r.macs_before),
                fmt(r.macs_after),
            ]
            for r in layer_rows
        ]
        plotted = [
            {
                "name": r.name,
                "sparsity": r.sparsity,
                "out_before": r.shape_before[0],
                "out_after": r.shape_after[0],
            }
            for r in layer_rows
        ]
        blocks.append(Block("table", LAYER_HEAD, table))
        blocks.append(Block("img", "per_layer.png", plots.per_layer(plotted)))
    return blocks + _plan(run.result.plan)


def _plan(plan: Plan) -> list[Block]:
    blocks = []
    rows = plan.rows()
    if rows:
        blocks.append(
            Block(
                "p",
                "The plan: what each operator removed, per layer or coupled "
                "group (channels of a group are removed together).",
            )
        )
        table = [
            [
                r["op"],
                r["name"],
                fmt(r["layers"]),
                r["units"],
                fmt(r["total"]),
                fmt(r["removed"]),
                f"{r['sparsity']:.3f}",
                fmt(r["physical"]),
            ]
            for r in rows
        ]
        blocks.append(Block("table", PLAN_HEAD, table))
    if plan.quantized:
        by_bits: dict[int, list[str]] = {}
        for layer, bits in plan.quantized.items():
            by_bits.setdefault(bits, []).append(layer)
        shared = "; ".join(
            f"{len(layers)} layer(s) at {bits} bits ({', '.join(layers)})"
            for bits, layers in sorted(by_bits.items())
        )
        blocks.append(
            Block(
                "p",
                "Quantized (k-means weight sharing, stored as a value table plus indices): "
                f"{shared}.",
            )
        )
    return blocks


def _search(run: Run) -> list[Block]:
    result, settings = run.result, run.settings
    names = [o["name"] for o in settings.objectives]
    directions = [o["direction"] for o in settings.objectives]
    trials = [dict(t, pareto=t["number"] in result.pareto) for t in result.trials]
    done = [t for t in trials if t.get("objectives")]
    feasible = sum(1 for t in done if t.get("feasible"))
    blocks = [
        Block("h2", "Search history"),
        Block(
            "p",
            f"{len(done)} trials, {feasible} feasible in the search "
            f"(proxy accuracy drop at most tau = {settings.tau:.4f}); sampler "
            f"`{settings.sampler}`, space `{settings.space}`, "
            f"seed {settings.seed}. The recovered plan came from trial "
            f"{result.chosen_trial}.",
        ),
    ]
    if done and names:
        blocks.append(Block("img", "history.png", plots.history(trials, names, directions)))
    return blocks + _levels(run) + _agreement(run)


def _agreement(run: Run) -> list[Block]:
    """Every plan recovered for real beside its proxy drop: can the proxy be trusted?"""
    agreement = run.result.agreement
    blocks = [Block("h2", "Proxy agreement"), Block("p", agreement.describe() + ".")]
    if agreement.pairs:
        rows = [[p.label, f"{p.proxy_drop:+.4f}", f"{p.drop:+.4f}"] for p in agreement.pairs]
        blocks.append(Block("table", ["plan", "proxy drop", "recovered drop"], rows))
    return blocks


def _levels(run: Run) -> list[Block]:
    """The levels recovered for real: the calibration's, then the refinement's."""
    blocks = []
    head = ["level", "mean sparsity", "proxy drop", "recovered val", "recovered drop", "holds eps"]
    for records, text in (
        (
            run.settings.calibration,
            "Calibration of the search threshold: uniform plans recovered for real, bisected.",
        ),
        (
            run.settings.refinement,
            f"Refinement of trial {run.result.chosen_trial}: its level raised step by step, "
            "each step recovered for real; the highest level that held eps is the result.",
        ),
    ):
        if not records:
            continue
        rows = [
            [
                f"{r.level:.4f}",
                f"{r.mean_sparsity:.3f}",
                "" if r.proxy_drop is None else f"{r.proxy_drop:+.4f}",
                "" if r.val_accuracy is None else f"{r.val_accuracy:.4f}",
                f"{r.drop:+.4f}",
                fmt(r.holds),
            ]
            for r in records
        ]
        blocks += [Block("p", text), Block("table", head, rows)]
    return blocks


def _sensitivity_section(run: Run) -> list[Block]:
    sens = _sensitivity(run.run_dir, run.settings.sensitivity)
    if sens is None:
        return []
    plot = plots.sensitivity(sens["levels"], sens["accuracy"], sens["base"], run.settings.eps)
    return [Block("h2", "Sensitivity"), Block("img", "sensitivity.png", plot)]


def _channel_norm_section(run: Run) -> list[Block]:
    if run.original is None:
        return []
    layers = _channel_norms(run.original, run.result)
    if not layers:
        return []
    return [
        Block("h2", "Channel norms"),
        Block(
            "p",
            "L1 norm of each output channel before (grey) and after "
            "(blue) pruning, in the original channel order. Unstructured "
            "pruning lowers every channel's norm a little; structured "
            "pruning removes whole channels (norm 0) and keeps the rest.",
        ),
        Block("img", "channel_norms.png", plots.channel_norms(layers)),
    ]


def _environment(run: Run) -> list[Block]:
    env = run.settings.environment
    rows = [
        ["autoprune", env.get("autoprune", __version__)],
        ["torch", env.get("torch", torch.__version__)],
        ["optuna", env.get("optuna", "")],
        ["python", env.get("python", platform.python_version())],
        ["machine", env.get("machine", platform.machine())],
        ["threads", fmt(env.get("threads"))],
        ["device", str(env.get("device"))],
        ["seed", fmt(run.settings.seed)],
        ["phases (s)", ", ".join(f"{k} {v:.0f}" for k, v in run.result.phases.items())],
    ]
    return [Block("h2", "Environment"), Block("table", ["", ""], rows)]


SECTIONS = (
    _heading,
    _summary,
    _per_layer,
    _search,
    _sensitivity_section,
    _channel_norm_section,
    _environment,
)


def _sensitivity(run_dir: str, stored: dict | None) -> dict | None:
    path = os.path.join(run_dir, "sensitivity.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return stored


def _channel_norms(original, result, limit: int = 8):
    kept: dict[str, list[int]] = {}
    for g in result.plan.groups.values():
        for layer in g.layers:
            kept[layer] = g.in_tensors
    after_mods = dict(result.model.named_modules())
    out = []
    for name, m in original.named_modules():
        if not isinstance(m, torch.nn.Conv2d) or name not in after_mods or m.groups > 1:
            continue
        before = m.weight.detach().abs().flatten(1).sum(1)
        after_w = after_mods[name].weight.detach().abs().flatten(1).sum(1)
        after = torch.zeros_like(before)
        idx = kept.get(name, list(range(len(after_w))))
        if len(idx) == len(after_w):
            after[idx] = after_w
        out.append((name, before.tolist(), after.tolist()))
        if len(out) >= limit:
            break
    return out
