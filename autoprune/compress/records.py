"""The typed records a run keeps: levels recovered for real, and the study's preparation.

A :class:`LevelRecord` is one plan at a global ``level``, recovered for real and judged
against eps: the calibration's uniform plans and the refinement's steps are both such
records. The :class:`Preparation` is what a run settles before its trials (unit ranges,
threshold, warm starts, searched level range, calibration), stored with the study so a
resumed study searches the same space.

    >>> r = LevelRecord(level=0.5, mean_sparsity=0.45, drop=0.004, holds=True)
    >>> LevelRecord.from_dict(r.to_dict()) == r
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .space import Unit


@dataclass(frozen=True)
class LevelRecord:
    """A plan at one level, recovered for real.

    Attributes:
        level: the global level (the point of every unit's range, plus offsets).
        mean_sparsity: the plan's mean per-unit sparsity.
        drop: the recovered model's validation accuracy drop.
        holds: whether ``drop <= eps``.
        val_accuracy: the recovered model's validation accuracy.
        proxy_drop: the plan's proxy drop (calibration plans; refinement steps, scored
            after the fact); None when the proxy did not score it (no study could use
            it: :func:`~autoprune.compress.shape.room_for_study`).
        recovery_seconds: the recovery's own duration; ``seconds``: the whole step's.
    """

    level: float
    mean_sparsity: float
    drop: float
    holds: bool
    val_accuracy: float | None = None
    proxy_drop: float | None = None
    recovery_seconds: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LevelRecord:
        """Read a record; results written before this type spelt a calibration plan's
        drop ``finetuned_drop``."""
        data = dict(data)
        if "drop" not in data and "finetuned_drop" in data:
            data["drop"] = data["finetuned_drop"]
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def first_broken_above(records: Sequence[LevelRecord], level: float) -> LevelRecord | None:
    """The record of the lowest level above ``level`` that broke eps.

    >>> recs = [LevelRecord(0.5, 0.5, 0.0, True), LevelRecord(0.75, 0.7, 0.1, False)]
    >>> first_broken_above(recs, 0.5).level
    0.75
    """
    above = [r for r in records if not r.holds and r.level > level]
    return min(above, key=lambda r: r.level) if above else None


@dataclass(frozen=True)
class Preparation:
    """What a run settles before its trials (stored with the study as ``prepared``).

    Attributes:
        units: the searched units with their final ranges.
        tau: the search's threshold on the proxy drop.
        warm: uniform levels enqueued first.
        level_range: the range the study samples the global level from.
        calibration: the calibration's records.
        prior: the allocation prior per unit (a table over evenly spaced levels).
        sensitivity: the sensitivity analysis the bounds came from, as a dict.
        target_level: in the shape space, the prior's level whose cost every trial
            matches (None in the others).
        references: in the shape space, other allocations' shapes at that cost, by name
            (offset parameters), which the study scores besides its own.
    """

    units: list[Unit]
    tau: float
    warm: list[float]
    level_range: tuple[float, float] = (0.0, 1.0)
    calibration: list[LevelRecord] = field(default_factory=list)
    prior: dict[str, list[float]] = field(default_factory=dict)
    sensitivity: dict[str, Any] | None = None
    target_level: float | None = None
    references: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def held(self) -> float | None:
        """The most pruned calibration level that held eps (None: none held)."""
        levels = [r.level for r in self.calibration if r.holds]
        return max(levels) if levels else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "units": [asdict(u) for u in self.units],
            "tau": self.tau,
            "warm": list(self.warm),
            "level_range": list(self.level_range),
            "calibration": [r.to_dict() for r in self.calibration],
        }
        if self.prior:
            out["prior"] = self.prior
        if self.sensitivity is not None:
            out["sensitivity"] = self.sensitivity
        if self.target_level is not None:
            out["target_level"] = self.target_level
        if self.references:
            out["references"] = self.references
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preparation:
        return cls(
            units=[Unit(**u) for u in data["units"]],
            tau=float(data["tau"]),
            warm=[float(w) for w in data["warm"]],
            level_range=(float(data["level_range"][0]), float(data["level_range"][1])),
            calibration=[LevelRecord.from_dict(r) for r in data.get("calibration", [])],
            prior=dict(data.get("prior") or {}),
            sensitivity=data.get("sensitivity"),
            target_level=data.get("target_level"),
            references={
                name: {k: float(v) for k, v in offsets.items()}
                for name, offsets in (data.get("references") or {}).items()
            },
        )
