"""What a compression run returns, and how it is saved and loaded.

A saved result is a directory:

==================  ==================================================================
``result.json``     metrics before/after, the plan, phases, notes, settings, trials
``model.pt``        the compressed model's ``state_dict`` (``torch.load(weights_only=True)``)
``model.apz``       the same weights in autoprune's sparse format
``plan.json``       the plan alone
``original.pt``     the original model's ``state_dict`` (for the report's per-layer tables)
``trials.csv``      one row per trial of the search
==================  ==================================================================

Loading rebuilds the original architecture (from the model spec recorded when the model
came from :func:`autoprune.create_model`, or from the ``model`` you pass), applies the plan
and loads the weights.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import _masking as masking
from .. import encoding
from .._io import atomic_write
from ..errors import ConfigError, DataError
from ..metrics import block_hints, format_table
from ..models import rebuild
from ..plan import Plan, get_plan
from ..schemes.structured import apply_plan
from .agreement import Agreement
from .measure import Measurements
from .settings import RunSettings

FORMAT = "autoprune.result/1"


@dataclass
class CompressionResult:
    """The outcome of :meth:`autoprune.Compressor.run`.

    Attributes:
        model: the compressed model (physically smaller where the scheme allows), or a copy
            of the original when no candidate kept accuracy within eps (``feasible`` False).
        plan: what was removed, per layer or coupled group.
        feasible: True when the returned model's validation accuracy is within eps.
        before, after: :class:`~autoprune.compress.measure.Measurements` of the original and
            the compressed model (``val_accuracy``, ``test_accuracy``, ``params``,
            ``nonzero_params``, ``macs``, ``dense_bytes``, ``sparse_bytes``,
            ``sparse_bytes_fp16``, ``throughput`` in images/s, ``latency_ms``), read as
            mappings too (``after["macs"]``).
        objectives: per objective, its final careful measurement as a ratio to the original.
        study: the Optuna study (None after :meth:`load`).
        chosen_trial: the trial whose plan was recovered (None if none was).
        pareto: trial numbers of the feasible Pareto front (several objectives).
        phases: wall seconds of each phase.
        notes: what happened that a reader should know (back-offs, fallbacks).
        settings: the run's :class:`~autoprune.compress.settings.RunSettings`, for reports
            and reproduction (``settings["tau"]`` reads its JSON form).
        trials: one dict per completed trial.
        original: the original model (saved beside the compressed one, so that a report
            can compare them layer by layer); None after :meth:`load`.
        directory: where it was loaded from (None: made by this process).
        agreement: every plan recovered for real beside its proxy drop, and their rank
            correlation (:mod:`~autoprune.compress.agreement`).
    """

    model: nn.Module
    plan: Plan
    feasible: bool
    before: Measurements
    after: Measurements
    objectives: dict[str, float]
    study: Any = None
    chosen_trial: int | None = None
    pareto: list[int] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    settings: RunSettings = field(default_factory=RunSettings)
    trials: list[dict[str, Any]] = field(default_factory=list)
    original: nn.Module | None = field(default=None, repr=False)
    directory: str | None = field(default=None, repr=False)
    agreement: Agreement = field(default_factory=Agreement)

    # -- reading ------------------------------------------------------------------------
    def ratios(self) -> dict[str, float]:
        """``after / before`` for every metric both sides have."""
        return {
            k: (self.after[k] / self.before[k]) if self.before.get(k) else float("nan")
            for k in self.after
            if k in self.before and isinstance(self.after[k], (int, float))
        }

    def masked_warning(self) -> str | None:
        """Why this result is not faster, when it is not: a structured plan that stayed
        masked (same shapes, so no speed-up) under a timing objective; else None."""
        timed = any(o.get("search") != "exact" for o in self.settings.objectives)
        if not (timed and self.plan.groups and not self.plan.physical):
            return None
        why = next((n for n in self.notes if n.startswith("kept the masked model")), None)
        return (
            "the structured plan stayed MASKED: the model has its original shapes and runs "
            "no faster" + (f" ({why})" if why else "")
        )

    def summary(self) -> str:
        """A plain-text before/after table; its first line says whether the result is
        feasible, and warns when a structured plan stayed masked under a speed objective."""
        rows = []
        ratios = self.ratios()
        for k in self.after:
            rows.append(
                {
                    "metric": k,
                    "original": self.before.get(k, float("nan")),
                    "compressed": self.after[k],
                    "ratio": ratios.get(k, float("nan")),
                }
            )
        head = "feasible" if self.feasible else "NOT FEASIBLE: the original model is returned"
        warning = self.masked_warning()
        if warning:
            head += f"; WARNING: {warning}"
        return f"{head}\n" + format_table(rows) + f"\n{self.agreement.describe()}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "feasible": self.feasible,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "ratios": self.ratios(),
            "objectives": self.objectives,
            "chosen_trial": self.chosen_trial,
            "pareto": self.pareto,
            "phases": self.phases,
            "notes": self.notes,
            "settings": self.settings.to_dict(),
            "plan": self.plan.to_dict(),
            "trials": self.trials,
            "proxy_agreement": self.agreement.to_dict(),
        }

    # -- saving -------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> str:
        """Write the result into ``directory`` (created if needed); returns its path.

        Every file is written to a temporary name first and renamed into place.
        """
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        _save_state(self.model, os.path.join(directory, "model.pt"))
        if self.original is not None:
            _save_state(self.original, os.path.join(directory, "original.pt"))
        encoding.save(
            self.model, os.path.join(directory, "model.apz"), blocks=block_hints(self.model)
        )
        atomic_write(os.path.join(directory, "plan.json"), self.plan.to_json(indent=2).encode())
        atomic_write(os.path.join(directory, "trials.csv"), trials_csv(self.trials))
        # result.json, written last, is the manifest: the digests of the files beside it
        names = ["model.pt", "model.apz", "plan.json"]
        names += ["original.pt"] if self.original is not None else []
        files = {name: _digest(os.path.join(directory, name)) for name in names}
        text = json.dumps({**self.to_dict(), "files": files}, indent=2, default=_json_default)
        atomic_write(os.path.join(directory, "result.json"), text.encode())
        return directory

    @classmethod
    def load(
        cls, directory: str | os.PathLike, model: nn.Module | None = None
    ) -> CompressionResult:
        """Load a saved result; ``model`` is a fresh instance of the ORIGINAL architecture
        (not needed when the model was made by :func:`autoprune.create_model`)."""
        directory = os.fspath(directory)
        path = os.path.join(directory, "result.json")
        if not os.path.isfile(path):
            raise DataError(f"no saved result in {directory} (result.json is missing)")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(
                f"{path} is not readable JSON (truncated or damaged? {exc}); run the search "
                "again to rewrite it"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise DataError(f"{path} is not an autoprune result ({found!r})")
        for name, digest in (data.get("files") or {}).items():
            here = os.path.join(directory, name)
            if not os.path.isfile(here) or _digest(here) != digest:
                raise DataError(
                    f"{here} does not match {path} (a run stopped while saving it?); run the "
                    "search again to rewrite the result"
                )
        settings = data.get("settings", {})
        if model is None:
            spec = settings.get("model_spec")
            if spec is None:
                raise ConfigError(
                    "model: this result's model was not built by autoprune.create_model; "
                    "pass model=<a fresh instance of the original architecture>"
                )
            model = rebuild(spec)
        plan = Plan.from_dict(data["plan"])
        x = torch.zeros(1, *settings["input_shape"])
        model = apply_plan(model, plan, x)
        try:
            state = torch.load(
                os.path.join(directory, "model.pt"), map_location="cpu", weights_only=True
            )
        except Exception as exc:  # a missing, truncated or foreign file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"{directory}/model.pt cannot be read ({first})") from None
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise DataError(
                f"{directory}/model.pt does not fit the rebuilt model: {str(exc).splitlines()[0]}"
            ) from None
        masking.masks_from_zeros(model, [f"{e.layer}.weight" for e in plan.layers])
        model.eval()
        return cls(
            model=model,
            plan=get_plan(model),
            feasible=data["feasible"],
            before=Measurements.from_dict(data["before"]),
            after=Measurements.from_dict(data["after"]),
            objectives=data["objectives"],
            chosen_trial=data.get("chosen_trial"),
            pareto=data.get("pareto", []),
            phases=data.get("phases", {}),
            notes=data.get("notes", []),
            settings=RunSettings.from_dict(settings),
            trials=data.get("trials", []),
            directory=directory,
            agreement=Agreement.from_dict(data.get("proxy_agreement")),
        )


def _save_state(model: nn.Module, path: str) -> None:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write(path, buf.getvalue())


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, tuple)):
        return list(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _digest(path: str) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def trials_csv(trials: list[dict[str, Any]]) -> bytes:
    """The trials as CSV: one row each; per-unit sparsities as ``s:<unit>`` columns."""
    units: list[str] = []
    for t in trials:
        for u in t.get("sparsities", {}):
            if u not in units:
                units.append(u)
    scalar = ["number", "state", "feasible", "accuracy", "drop", "seconds"]
    value_cols: list[str] = []
    for t in trials:
        for k in t.get("objectives", {}):
            if k not in value_cols:
                value_cols.append(k)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(scalar + value_cols + ["mean_sparsity"] + [f"s:{u}" for u in units])
    for t in trials:
        sp = t.get("sparsities", {})
        mean = sum(sp.values()) / len(sp) if sp else ""
        writer.writerow(
            [t.get(k, "") for k in scalar]
            + [t.get("objectives", {}).get(k, "") for k in value_cols]
            + [mean]
            + [sp.get(u, "") for u in units]
        )
    return out.getvalue().encode()
