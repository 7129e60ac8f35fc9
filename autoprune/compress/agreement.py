"""How far the search's proxy can be trusted: its rank agreement with real recoveries.

The study ranks plans by a cheap proxy (a short fine-tune); only some plans are recovered
for real (the calibration's, the finalists', the refinement's). Every such plan gives a
pair (proxy drop, recovered drop). Their Spearman rank correlation says how well the proxy
orders plans by what recovery achieves: near 1, the study's ranking can be trusted; near
0 or below, the proxy cannot tell plans apart and the result rests on the recoveries.

    >>> a = Agreement([Pair("a", 0.01, 0.002), Pair("b", 0.05, 0.01), Pair("c", 0.03, 0.02)])
    >>> round(a.spearman, 3)
    0.5
    >>> a.describe()
    'proxy agreement: Spearman 0.50 between proxy and recovered drops over 3 plans'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from scipy import stats


@dataclass(frozen=True)
class Pair:
    """One plan recovered for real: what the proxy said, and what recovery gave."""

    label: str
    proxy_drop: float
    drop: float


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation (``scipy.stats.spearmanr``, ties averaged); None with
    fewer than three pairs or when either side is constant.

    >>> spearman([1, 2, 3, 4], [10, 20, 40, 30])
    0.8
    >>> spearman([1, 2], [2, 1]) is None
    True
    """
    if len(xs) != len(ys) or len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    rho = float(stats.spearmanr(xs, ys).statistic)
    return None if math.isnan(rho) else round(rho, 6)


@dataclass
class Agreement:
    """The pairs of a run, and their rank correlation. ``studied``: whether a study ran;
    without one the proxy chose no plan, and the recoveries after the study's place are
    not scored by it (its time goes to recoveries).

    >>> print(Agreement([Pair("a", 0.01, 0.002)], studied=False).describe())
    ... # doctest: +NORMALIZE_WHITESPACE
    proxy agreement: not measured: no study ran, so the proxy chose no plan (1 plan
    recovered for real was scored by it)
    """

    pairs: list[Pair] = field(default_factory=list)
    studied: bool = True

    @property
    def spearman(self) -> float | None:
        return spearman([p.proxy_drop for p in self.pairs], [p.drop for p in self.pairs])

    def describe(self) -> str:
        """One line for the summary and the report."""
        rho, n = self.spearman, len(self.pairs)
        if not self.studied and rho is None:
            return (
                "proxy agreement: not measured: no study ran, so the proxy chose no plan "
                f"({n} plan{'' if n == 1 else 's'} recovered for real "
                f"{'was' if n == 1 else 'were'} scored by it)"
            )
        if rho is None:
            return (
                f"proxy agreement: {n} plan(s) recovered for real, too few (or too alike) "
                "to rank the proxy against"
            )
        trust = "" if rho >= 0.5 else "; the proxy ranks plans poorly here"
        if not self.studied:
            trust += "; no study ran, so the proxy chose no plan"
        return (
            f"proxy agreement: Spearman {rho:.2f} between proxy and recovered drops over "
            f"{n} plans{trust}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "spearman": self.spearman,
            "pairs": [asdict(p) for p in self.pairs],
            "studied": self.studied,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Agreement:
        data = data or {}
        return cls([Pair(**p) for p in data.get("pairs", [])], bool(data.get("studied", True)))
