"""The report's figures, drawn with matplotlib's Agg backend into PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: The report's colours (``render.check`` looks for them in a screenshot).
REMOVED = "#d9534f"
KEPT = "#5b8def"
FEASIBLE = "#2e8b57"
ORIGINAL = "#cccccc"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def per_layer(rows: Sequence[dict[str, Any]]) -> bytes:
    """Bars of each layer's sparsity and, for structured pruning, the channels kept."""
    names = [r["name"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, max(3.0, 0.28 * len(rows) + 1.2)), sharey=True)
    y = range(len(rows))
    axes[0].barh(y, [r["sparsity"] for r in rows], color=REMOVED)
    axes[0].set_xlim(0, 1)
    axes[0].set_xlabel("weight sparsity (of the original weights)")
    axes[0].set_yticks(list(y), names, fontsize=7)
    axes[0].invert_yaxis()
    before = [r["out_before"] for r in rows]
    after = [r["out_after"] for r in rows]
    axes[1].barh(y, before, color=ORIGINAL, label="original")
    axes[1].barh(y, after, color=KEPT, label="kept")
    axes[1].set_xlabel("output channels / neurons")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle("Per layer")
    return _png(fig)


def history(
    trials: Sequence[dict[str, Any]], names: Sequence[str], directions: Sequence[str]
) -> bytes:
    """Objective per trial, feasible against infeasible; the Pareto view for two objectives."""
    done = [t for t in trials if t.get("objectives")]
    two = len(names) >= 2
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(11 if two else 7, 4))
    ax = axes[0] if two else axes
    first = names[0]
    for feasible, color, label in ((True, FEASIBLE, "feasible"), (False, REMOVED, "infeasible")):
        pts = [
            (t["number"], t["objectives"][first])
            for t in done
            if bool(t.get("feasible")) == feasible
        ]
        if pts:
            ax.scatter(*zip(*pts), s=18, color=color, label=label)
    best, line = None, []
    maximize = directions[0] == "maximize"
    for t in done:
        if t.get("feasible"):
            v = t["objectives"][first]
            if best is None or (v > best if maximize else v < best):
                best = v
        line.append((t["number"], best))
    pts = [(n, b) for n, b in line if b is not None]
    if pts:
        ax.plot(*zip(*pts), color=FEASIBLE, linewidth=1, label="best feasible")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{first} (ratio to original)")
    ax.legend(fontsize=8)
    ax.set_title("Search history")
    if two:
        second = names[1]
        bx = axes[1]
        for feasible, color in ((True, FEASIBLE), (False, REMOVED)):
            pts = [
                (t["objectives"][first], t["objectives"][second])
                for t in done
                if bool(t.get("feasible")) == feasible
            ]
            if pts:
                bx.scatter(*zip(*pts), s=18, color=color)
        front = sorted(
            (t["objectives"][first], t["objectives"][second]) for t in done if t.get("pareto")
        )
        if front:
            bx.plot(
                *zip(*front),
                color="black",
                linewidth=1,
                marker="o",
                markersize=4,
                label="Pareto front",
            )
            bx.legend(fontsize=8)
        bx.set_xlabel(first)
        bx.set_ylabel(second)
        bx.set_title("Objectives")
    return _png(fig)


def sensitivity(
    levels: Sequence[float], accuracy: dict[str, list[float]], base: float, eps: float | None = None
) -> bytes:
    """One accuracy-vs-sparsity curve per layer or group."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    cmap = plt.get_cmap("tab20")
    for i, (unit, accs) in enumerate(accuracy.items()):
        ax.plot(levels, accs, marker="o", markersize=3, linewidth=1, color=cmap(i % 20), label=unit)
    ax.axhline(base, color="black", linewidth=0.8, linestyle="--", label="unpruned")
    if eps is not None:
        ax.axhline(
            base - eps,
            color=REMOVED,
            linewidth=0.8,
            linestyle=":",
            label=f"unpruned - eps ({eps:g})",
        )
    ax.set_xlabel("sparsity of the one pruned layer or group")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Sensitivity")
    ax.legend(fontsize=6, ncol=2, loc="lower left")
    return _png(fig)


def channel_norms(layers: Sequence[tuple[str, list[float], list[float]]]) -> bytes:
    """L1 norm of every output channel, before and after pruning, one panel per layer.

    Channels are shown in their original order; a removed or all-zero channel has norm 0,
    as in the familiar figure that contrasts unstructured and structured pruning.
    """
    n = len(layers)
    cols = 2
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(11, 2.3 * rows), squeeze=False)
    for ax, (name, before, after) in zip(axes.flat, layers):
        x = range(len(before))
        ax.bar(x, before, color=ORIGINAL, width=1.0, label="original")
        ax.bar(x, after, color=KEPT, width=0.6, label="pruned")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("L1 norm per output channel")
    fig.tight_layout()
    return _png(fig)
