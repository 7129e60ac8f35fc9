"""Metrics and objectives.

A :class:`Metric` measures one quantity of a model (``metric(model, x) -> float``) and knows
how to compare a candidate with a reference: counts divide, timings are measured
interleaved. An :class:`Objective` is a metric with a direction::

    >>> from autoprune import objectives
    >>> obj = objectives.Maximize(objectives.throughput)
    >>> obj.name, obj.direction
    ('throughput', 'maximize')
    >>> objectives.Minimize(lambda model, x: 1.0).name
    '<lambda>'

The search optimises the *ratio* to the original model (``speedup = 2.0`` means twice the
original's throughput; ``size = 0.1`` means a tenth of its bytes), so objectives of any
unit share one scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..deployment import Deployment
from ..errors import ConfigError
from ..registry import Registry

objective_registry = Registry("objective")


def register_objective(name: str, metric: Metric) -> None:
    """Register a :class:`Metric` under ``name``, for specs and ``Maximize("name")``."""
    objective_registry.add(name, metric)


def list_objectives() -> list[str]:
    """The registered objective names.

    >>> "throughput" in list_objectives()
    True
    """
    return objective_registry.names()


MetricFn = Callable[[nn.Module, torch.Tensor], float]


class Metric:
    """A measurable quantity of a model.

    Subclasses set ``name``, ``unit`` and ``natural`` (the usual direction) and implement
    :meth:`__call__`. :meth:`ratio` compares a candidate with a reference; timing metrics
    override it to time the two side by side.

    Attributes:
        deterministic: False for timings (two measurements of one model differ).
        deployment: the form the model is measured in (timings: dtype, channels-last,
            compiled); plain float32 for counts.
    """

    name = "metric"
    unit = ""
    natural = "maximize"
    deterministic = True
    deployment = Deployment()

    def __call__(self, model: nn.Module, example_input: torch.Tensor) -> float:
        raise NotImplementedError

    def ratio(
        self,
        candidate: nn.Module,
        reference: nn.Module,
        example_input: torch.Tensor,
        reference_value: float | None = None,
        *,
        careful: bool = False,
    ) -> float:
        """``metric(candidate) / metric(reference)``; ``careful`` asks for more repeats."""
        ref = reference_value if reference_value is not None else self(reference, example_input)
        value = self(candidate, example_input)
        return value / ref if ref else float("inf")

    def describe(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FunctionMetric(Metric):
    """A plain callable ``f(model, example_input) -> float`` used as a metric."""

    def __init__(self, fn: MetricFn, name: str | None = None) -> None:
        if not callable(fn):
            raise ConfigError(f"objective: expected a callable f(model, example_input), got {fn!r}")
        self.fn = fn
        self.name = str(name or getattr(fn, "__name__", type(fn).__name__))
        self.deterministic = True

    def __call__(self, model: nn.Module, example_input: torch.Tensor) -> float:
        return float(self.fn(model, example_input))

    def __repr__(self) -> str:
        return f"FunctionMetric({self.name})"


def as_metric(value: Any) -> Metric:
    """A :class:`Metric` from a metric, a registered name or a plain callable."""
    if isinstance(value, Metric):
        return value
    if isinstance(value, str):
        return objective_registry.get(value)
    if callable(value):
        return FunctionMetric(value)
    raise ConfigError(f"objective: expected a metric, a name or a callable, got {value!r}")


@dataclass(frozen=True)
class Objective:
    """A metric and the direction to optimise it in."""

    metric: Metric
    direction: str

    @property
    def name(self) -> str:
        return self.metric.name

    def __repr__(self) -> str:
        return f"{'Maximize' if self.direction == 'maximize' else 'Minimize'}({self.metric!r})"


def Maximize(metric: Metric | str | MetricFn) -> Objective:  # noqa: N802 (reads as a type)
    """Maximise a metric (throughput, or your ``f(model, x)``)."""
    return Objective(as_metric(metric), "maximize")


def Minimize(metric: Metric | str | MetricFn) -> Objective:  # noqa: N802
    """Minimise a metric (size, latency, FLOPs, ...)."""
    return Objective(as_metric(metric), "minimize")


def as_objectives(value: Any) -> list[Objective]:
    """Objectives from one objective, a metric or name (its usual direction), or a list."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ConfigError("objective: expected at least one objective")
    out = []
    for item in items:
        if isinstance(item, Objective):
            out.append(item)
        elif isinstance(item, (Metric, str)):
            metric = as_metric(item)
            out.append(Objective(metric, metric.natural))
        elif callable(item):
            raise ConfigError(
                "objective: wrap a plain callable in Maximize(f) or Minimize(f) so the "
                "search knows which way is better"
            )
        else:
            raise ConfigError(f"objective: expected an objective, got {item!r}")
    names = [o.name for o in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"objective: the same objective is listed twice ({names})")
    deployment_of(out)
    return out


def deployment_of(objectives: Sequence[Objective]) -> Deployment:
    """The one form the objectives deploy the model in (plain float32 when none says).

    >>> from autoprune.objectives import Throughput, size
    >>> deployment_of([Maximize(Throughput(dtype="fp16")), Minimize(size)]).dtype
    'float16'
    """
    forms = {o.metric.deployment for o in objectives if not o.metric.deployment.is_default}
    if len(forms) > 1:
        shown = " and ".join(sorted(f.describe() for f in forms))
        raise ConfigError(
            f"objective: the timings are deployed in different forms ({shown}); give them "
            "the same dtype, channels_last and compile"
        )
    return forms.pop() if forms else Deployment()
