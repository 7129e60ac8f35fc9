"""Build ``report.md`` and a self-contained ``report.html`` from a run directory."""

from __future__ import annotations

import base64
import html
import json
import os
import platform
from dataclasses import dataclass
from typing import Any

import torch

from .. import __version__, metrics
from ..encoding import atomic_write
from ..errors import DataError
from ..models import rebuild
from ..result import CompressionResult
from . import plots


@dataclass
class Block:
    kind: str  # "h1", "h2", "p", "table", "img", "list"
    content: Any
    extra: Any = None


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:
            return ""
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, tuple):
        return "x".join(str(i) for i in v)
    return str(v)


SUMMARY = [
    ("val_accuracy", "validation accuracy"),
    ("test_accuracy", "test accuracy"),
    ("params", "parameters"),
    ("nonzero_params", "nonzero parameters"),
    ("macs", "MACs per image"),
    ("dense_bytes", "size, dense fp32 (bytes)"),
    ("sparse_bytes", "size, sparse fp32 (bytes)"),
    ("sparse_bytes_fp16", "size, sparse fp16 (bytes)"),
    ("throughput", "throughput (images/s, batch 64)"),
    ("latency_ms", "latency (ms, batch 1)"),
]


def _load_models(run_dir: str, result: CompressionResult):
    spec = result.settings.get("model_spec")
    path = os.path.join(run_dir, "original.pt")
    if spec is None or not os.path.isfile(path):
        return None
    original = rebuild(spec)
    original.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return original.eval()


def build(run_dir: str | os.PathLike) -> tuple[str, str]:
    """Write ``report.md`` (with PNG files beside it) and ``report.html`` into ``run_dir``."""
    run_dir = os.fspath(run_dir)
    if not os.path.isfile(os.path.join(run_dir, "result.json")):
        raise DataError(f"no run in {run_dir}: result.json is missing (run autoprune search first)")
    result = CompressionResult.load(run_dir)
    settings = result.settings
    original = _load_models(run_dir, result)
    x = torch.zeros(1, *settings["input_shape"])
    blocks: list[Block] = []
    title = settings.get("title") or os.path.basename(os.path.abspath(run_dir))
    blocks.append(Block("h1", f"autoprune report: {title}"))
    verdict = (
        "**Feasible**: the compressed model's validation accuracy is within eps of the original's."
        if result.feasible
        else "**Not feasible**: no plan kept accuracy within eps; the original model is returned."
    )
    objs = ", ".join(f"{o['direction']} {o['measured']}" for o in settings.get("objectives", []))
    scheme = settings.get("scheme", {})
    blocks.append(
        Block(
            "p",
            f"{verdict} Scheme: `{scheme.get('op', '?')}`; objective: {objs}; "
            f"eps {settings.get('eps')}{' (relative)' if settings.get('relative') else ''}; "
            f"recovery: `{settings.get('recovery', {}).get('name', '?')}`.",
        )
    )

    # -- summary -------------------------------------------------------------------------
    blocks.append(Block("h2", "Summary"))
    rows = []
    for key, label in SUMMARY:
        if key in result.after:
            b, a = result.before.get(key), result.after[key]
            ratio = a / b if b else float("nan")
            rows.append([label, _fmt(b), _fmt(a), f"{ratio:.3f}x"])
    blocks.append(Block("table", ["metric", "original", "compressed", "ratio"], rows))
    final = ", ".join(f"{k} {v:.3f}x" for k, v in result.objectives.items())
    blocks.append(
        Block(
            "p",
            f"Objectives, measured carefully at the end as ratios to the "
            f"original: {final}. Throughput and latency were timed interleaved with "
            f"the original (median of 20 rounds) on {settings.get('threads')} "
            f"threads, {settings.get('device')}.",
        )
    )
    if result.notes:
        blocks.append(Block("list", result.notes))

    # -- per layer -----------------------------------------------------------------------
    blocks.append(Block("h2", "Per layer"))
    if original is not None:
        layer_rows = metrics.layer_report(original, result.model, x)
        data_rows = [
            {
                "name": r.name,
                "sparsity": r.sparsity,
                "out_before": r.shape_before[0],
                "out_after": r.shape_after[0],
            }
            for r in layer_rows
        ]
        blocks.append(
            Block(
                "table",
                [
                    "layer",
                    "type",
                    "shape before",
                    "shape after",
                    "sparsity",
                    "params before",
                    "nonzero after",
                    "MACs before",
                    "MACs after",
                ],
                [
                    [
                        r.name,
                        r.type,
                        _fmt(r.shape_before),
                        _fmt(r.shape_after),
                        f"{r.sparsity:.3f}",
                        _fmt(r.params_before),
                        _fmt(r.params_after),
                        _fmt(r.macs_before),
                        _fmt(r.macs_after),
                    ]
                    for r in layer_rows
                ],
            )
        )
        blocks.append(Block("img", "per_layer.png", plots.per_layer(data_rows)))
    plan_rows = result.plan.rows()
    if plan_rows:
        blocks.append(
            Block(
                "p",
                "The plan: what each operator removed, per layer or coupled "
                "group (channels of a group are removed together).",
            )
        )
        blocks.append(
            Block(
                "table",
                [
                    "operator",
                    "unit",
                    "layers",
                    "units",
                    "original",
                    "removed",
                    "sparsity",
                    "physical",
                ],
                [
                    [
                        r["op"],
                        r["name"],
                        _fmt(r["layers"]),
                        r["units"],
                        _fmt(r["total"]),
                        _fmt(r["removed"]),
                        f"{r['sparsity']:.3f}",
                        _fmt(r["physical"]),
                    ]
                    for r in plan_rows
                ],
            )
        )
    if result.plan.quantized:
        by_bits: dict[int, list[str]] = {}
        for layer, bits in result.plan.quantized.items():
            by_bits.setdefault(bits, []).append(layer)
        blocks.append(
            Block(
                "p",
                "Quantized (k-means weight sharing, stored as a value table plus indices): "
                + "; ".join(
                    f"{len(layers)} layer(s) at {bits} bits ({', '.join(layers)})"
                    for bits, layers in sorted(by_bits.items())
                )
                + ".",
            )
        )

    # -- search --------------------------------------------------------------------------
    blocks.append(Block("h2", "Search history"))
    names = [o["name"] for o in settings.get("objectives", [])]
    directions = [o["direction"] for o in settings.get("objectives", [])]
    trials = [dict(t, pareto=t["number"] in result.pareto) for t in result.trials]
    done = [t for t in trials if t.get("objectives")]
    feasible = sum(1 for t in done if t.get("feasible"))
    tau = settings.get("tau")
    blocks.append(
        Block(
            "p",
            f"{len(done)} trials, {feasible} feasible in the search "
            f"(proxy accuracy drop at most tau = {tau:.4f}); sampler "
            f"`{settings.get('sampler')}`, space `{settings.get('space')}`, "
            f"seed {settings.get('seed')}. The recovered plan came from trial "
            f"{result.chosen_trial}.",
        )
    )
    if done and names:
        blocks.append(Block("img", "history.png", plots.history(trials, names, directions)))
    calibration = settings.get("calibration") or []
    if calibration:
        blocks.append(
            Block(
                "p",
                "Calibration of the search threshold: uniform plans recovered for real, bisected.",
            )
        )
        blocks.append(
            Block(
                "table",
                ["level", "mean sparsity", "proxy drop", "recovered drop", "holds eps"],
                [
                    [
                        f"{c['level']:.3f}",
                        f"{c['mean_sparsity']:.3f}",
                        f"{c['proxy_drop']:+.4f}",
                        f"{c['finetuned_drop']:+.4f}",
                        _fmt(c["holds"]),
                    ]
                    for c in calibration
                ],
            )
        )

    refinement = settings.get("refinement") or []
    if refinement:
        blocks.append(
            Block(
                "p",
                f"Refinement of trial {result.chosen_trial}: its level raised step by step, "
                "each step recovered for real; the highest level that held eps is the result.",
            )
        )
        blocks.append(
            Block(
                "table",
                ["level", "mean sparsity", "recovered val", "recovered drop", "holds eps"],
                [
                    [
                        f"{r['level']:.4f}",
                        f"{r['mean_sparsity']:.3f}",
                        f"{r['val_accuracy']:.4f}",
                        f"{r['drop']:+.4f}",
                        _fmt(r["holds"]),
                    ]
                    for r in refinement
                ],
            )
        )

    # -- sensitivity ---------------------------------------------------------------------
    sens = _sensitivity(run_dir, settings)
    if sens is not None:
        blocks.append(Block("h2", "Sensitivity"))
        blocks.append(
            Block(
                "img",
                "sensitivity.png",
                plots.sensitivity(
                    sens["levels"], sens["accuracy"], sens["base"], settings.get("eps")
                ),
            )
        )

    # -- channel norms -------------------------------------------------------------------
    if original is not None:
        layers = _channel_norms(original, result)
        if layers:
            blocks.append(Block("h2", "Channel norms"))
            blocks.append(
                Block(
                    "p",
                    "L1 norm of each output channel before (grey) and after "
                    "(blue) pruning, in the original channel order. Unstructured "
                    "pruning lowers every channel's norm a little; structured "
                    "pruning removes whole channels (norm 0) and keeps the rest.",
                )
            )
            blocks.append(Block("img", "channel_norms.png", plots.channel_norms(layers)))

    # -- environment ---------------------------------------------------------------------
    blocks.append(Block("h2", "Environment"))
    env = [
        ["autoprune", settings.get("autoprune", __version__)],
        ["torch", settings.get("torch", torch.__version__)],
        ["optuna", settings.get("optuna", "")],
        ["python", settings.get("python", platform.python_version())],
        ["machine", settings.get("machine", platform.machine())],
        ["threads", _fmt(settings.get("threads"))],
        ["device", str(settings.get("device"))],
        ["seed", _fmt(settings.get("seed"))],
        ["phases (s)", ", ".join(f"{k} {v:.0f}" for k, v in result.phases.items())],
    ]
    blocks.append(Block("table", ["", ""], env))
    md = _markdown(blocks, run_dir)
    page = _html(blocks, title)
    md_path = os.path.join(run_dir, "report.md")
    html_path = os.path.join(run_dir, "report.html")
    atomic_write(md_path, md.encode())
    atomic_write(html_path, page.encode())
    return md_path, html_path


def _sensitivity(run_dir: str, settings: dict) -> dict | None:
    path = os.path.join(run_dir, "sensitivity.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return settings.get("sensitivity")


def _channel_norms(original, result, limit: int = 8):
    kept: dict[str, list[int]] = {}
    for g in result.plan.groups.values():
        for layer in g.layers:
            kept[layer] = g.present
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


# -- rendering ---------------------------------------------------------------------------


def _markdown(blocks: list[Block], run_dir: str) -> str:
    lines: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            lines += [f"# {b.content}", ""]
        elif b.kind == "h2":
            lines += [f"## {b.content}", ""]
        elif b.kind == "p":
            lines += [b.content, ""]
        elif b.kind == "list":
            lines += [f"- {item}" for item in b.content] + [""]
        elif b.kind == "table":
            head, rows = b.content, b.extra
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
            lines.append("")
        elif b.kind == "img":
            atomic_write(os.path.join(run_dir, b.content), b.extra)
            lines += [f"![{b.content[:-4].replace('_', ' ')}]({b.content})", ""]
    return "\n".join(lines)


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}
h1{font-size:1.6em;border-bottom:2px solid #444;padding-bottom:.3em}
h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.85em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right}
th{background:#f3f6fb}td:first-child,th:first-child{text-align:left}
img{max-width:100%;margin:.5em 0}code{background:#f3f3f3;padding:0 .2em}
"""


def _inline(text: str) -> str:
    out = html.escape(text)
    parts = out.split("**")
    out = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _html(blocks: list[Block], title: str) -> str:
    body: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2"):
            body.append(f"<{b.kind}>{html.escape(b.content)}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{_inline(b.content)}</p>")
        elif b.kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.content) + "</ul>")
        elif b.kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.content)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                for r in b.extra
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b.kind == "img":
            data = base64.b64encode(b.extra).decode()
            alt = html.escape(b.content[:-4].replace("_", " "))
            body.append(f'<img alt="{alt}" src="data:image/png;base64,{data}">')
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
