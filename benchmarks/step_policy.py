"""How far a search along one level gets in a few noisy recoveries: a simulation.

The calibration and the refinement look for the most pruned level whose *recovered* drop
stays within eps, one real recovery per step. A recovered drop is noisy: plans next to
each other (and the same plan in another run) differ by a few tenths of a point, because
the validation split has a few thousand examples and fine-tuning is stochastic. This
script asks what that noise does to a search of a few steps, so that a change of step
rule can be judged by more than one 15-minute run.

The drop curve is ``a * level ** p`` plus Gaussian noise of ``--sigma``; the default curve
was fitted to the eleven recoveries of the ResNet-10's uniform plans in the suite's logs
(levels 0.25 to 0.5, 2026-12-07; residual SD 0.0022). Each policy runs ``--steps``
recoveries from the bracket [0, 1]:

* ``bisect``: halfway, always (what autoprune does);
* ``falsi``: once a level has held and one above it has broken, where the line between
  their two drops reaches eps (regula falsi), at least a fifth of the bracket from
  either end;
* ``falsi_margin``: the same, aimed at ``eps - sigma``.

For each policy and each number of steps it prints the mean level returned, as a
fraction of the true edge (where the noiseless curve reaches eps), its SD across runs,
and how often the returned level's true drop is past eps (a plan that held by luck).

    python benchmarks/step_policy.py                  # the ResNet-10's curve, sigma 0.0022
    python benchmarks/step_policy.py --sigma 0.001 --steps 3 5 8
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass

KEEP = 0.2  # an interpolated step stays this share of the bracket from either end
POLICIES = ("bisect", "falsi", "falsi_margin")


@dataclass(frozen=True)
class Curve:
    """The mean recovered drop at a level: ``a * level ** p``."""

    a: float = 0.0770
    p: float = 2.25

    def __call__(self, level: float) -> float:
        return self.a * level**self.p

    def edge(self, eps: float) -> float:
        """The level where the mean drop reaches ``eps``."""
        return min(1.0, (eps / self.a) ** (1.0 / self.p))


def next_level(policy: str, lo: float, hi: float, drops, eps: float, sigma: float) -> float:
    lo_drop, hi_drop = drops
    if policy == "bisect" or lo_drop is None or hi_drop is None or hi_drop <= lo_drop:
        return (lo + hi) / 2
    target = eps - (sigma if policy == "falsi_margin" else 0.0)
    t = (target - lo_drop) / (hi_drop - lo_drop)
    return lo + min(1.0 - KEEP, max(KEEP, t)) * (hi - lo)


def search(
    policy: str, steps: int, curve: Callable[[float], float], eps: float, sigma: float, rng
) -> float:
    """The most pruned level that held eps in ``steps`` noisy recoveries (0: none held)."""
    lo, hi, drops, best = 0.0, 1.0, (None, None), 0.0
    for _ in range(steps):
        level = next_level(policy, lo, hi, drops, eps, sigma)
        drop = curve(level) + rng.gauss(0.0, sigma)
        if drop <= eps:
            lo, drops, best = level, (drop, drops[1]), level
        else:
            hi, drops = level, (drops[0], drop)
    return best


@dataclass(frozen=True)
class Outcome:
    policy: str
    steps: int
    mean: float  # the mean level returned, over the true edge
    sd: float  # its SD across runs, over the true edge
    lucky: float  # the share of runs whose returned level's true drop is past eps


def simulate(
    policy: str, steps: int, curve: Curve, eps: float, sigma: float, runs: int, seed: int = 0
) -> Outcome:
    rng = random.Random(seed)
    levels = [search(policy, steps, curve, eps, sigma, rng) for _ in range(runs)]
    edge = curve.edge(eps)
    return Outcome(
        policy,
        steps,
        statistics.fmean(levels) / edge,
        statistics.pstdev(levels) / edge,
        sum(curve(level) > eps for level in levels) / runs,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=float, default=Curve.a, help="the curve's scale")
    parser.add_argument("--p", type=float, default=Curve.p, help="the curve's power")
    parser.add_argument("--sigma", type=float, default=0.0022, help="noise of one drop")
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 5, 7])
    parser.add_argument("--runs", type=int, default=20000)
    args = parser.parse_args()
    if min(args.a, args.p, args.eps, args.runs, *args.steps) <= 0 or args.sigma < 0:
        parser.error("--a, --p, --eps, --runs and --steps must be positive, --sigma at least 0")
    curve = Curve(args.a, args.p)
    print(
        f"drop = {curve.a:g} * level^{curve.p:g} + N(0, {args.sigma:g}); eps {args.eps:g}; "
        f"true edge at level {curve.edge(args.eps):.3f}; {args.runs} runs each"
    )
    print(f"{'steps':>5}  {'policy':<13} {'level/edge':>10} {'sd':>6} {'past eps':>8}")
    for steps in args.steps:
        for policy in POLICIES:
            o = simulate(policy, steps, curve, args.eps, args.sigma, args.runs)
            print(f"{steps:>5}  {policy:<13} {o.mean:>10.3f} {o.sd:>6.3f} {o.lucky:>8.2f}")


if __name__ == "__main__":
    main()
