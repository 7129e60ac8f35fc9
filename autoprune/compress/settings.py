"""The run's settings: what a report shows and what reproducing the run needs.

:class:`RunSettings` is written into ``result.json`` as ``settings`` and read back from
it; keys it does not know (a later version's) are kept in ``extra``.

    >>> s = RunSettings(eps=0.01, tau=0.02)
    >>> RunSettings.from_dict(s.to_dict()).tau
    0.02
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol

import optuna
import torch

from .. import __version__
from .._backends import describe_device
from ..deployment import Deployment
from ..models import model_spec
from ..objectives import deployment_of
from .preparation import prior_used
from .records import LevelRecord, Preparation

if TYPE_CHECKING:
    from ..objectives import Objective
    from ..recovery import Recovery
    from ..schemes import Scheme
    from .bounds import Bounds
    from .context import RunContext
    from .options import Budget
    from .refinement import Refinement
    from .space import Unit


class Configured(Protocol):
    """What the settings read of a :class:`~autoprune.compress.Compressor`."""

    model: Any
    scheme: Scheme
    recovery: Recovery
    objectives: list[Objective]
    eps: float
    relative: bool
    sampler: str
    space: str
    prior: str
    bounds: Bounds
    budget: Budget
    seed: int
    proxy: Any
    calibration: Any
    sensitivity: Any

    @property
    def data_name(self) -> str: ...

    def storage_url(self) -> str | None: ...


def environment(device: str) -> dict[str, Any]:
    """Versions, machine, threads and device, as the report's environment section shows."""
    return {
        "autoprune": __version__,
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "device": device,
    }


@dataclass
class RunSettings:
    """Everything a run was set up with, and the preparation it settled on.

    Attributes:
        environment: versions, machine, threads and device (:func:`environment`).
        model_spec, input_shape, data: how to rebuild the model, its input, the data's name.
        scheme, recovery: their configurations (``{"op": ...}`` / ``{"name": ...}``).
        objectives: ``{"name", "direction", "measured", "search"}`` each.
        deployment: the form the model was timed and accuracy-checked in
            (:meth:`~autoprune.deployment.Deployment.to_dict`).
        eps, relative, sampler, space, prior, bounds, units, n_trials, timeout, seed:
            as given (``units`` with their final ranges).
        prior_used: the prior the run used: ``prior``, or the scheme's ``"auto"`` prior
            where a sensitivity analysis for the prior would not have fitted the timeout
            (:func:`~autoprune.compress.preparation.fallback_prior`).
        options: the proxy, calibration and sensitivity options.
        tau, level_range: the search's threshold and sampled level range.
        target_level: in the shape space, the prior's level whose cost every trial has.
        calibration, refinement: the levels recovered for real.
        sensitivity: the analysis the bounds came from (as a dict), if any.
        storage, study_name: the Optuna study.
    """

    environment: dict[str, Any] = field(default_factory=dict)
    model_spec: dict[str, Any] | None = None
    input_shape: list[int] = field(default_factory=list)
    data: str = ""
    scheme: dict[str, Any] = field(default_factory=dict)
    recovery: dict[str, Any] = field(default_factory=dict)
    objectives: list[dict[str, Any]] = field(default_factory=list)
    deployment: dict[str, Any] = field(default_factory=lambda: Deployment().to_dict())
    eps: float = 0.0
    relative: bool = False
    sampler: str = "tpe"
    space: str = "offsets"
    prior: str = "uniform"
    prior_used: str = ""
    bounds: Any = None
    units: list[dict[str, Any]] = field(default_factory=list)
    n_trials: int | None = None
    timeout: float | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    tau: float = 0.0
    level_range: list[float] | None = None
    target_level: float | None = None
    calibration: list[LevelRecord] = field(default_factory=list)
    refinement: list[LevelRecord] = field(default_factory=list)
    sensitivity: dict[str, Any] | None = None
    storage: str | None = None
    study_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the environment's keys at the top level, records as dicts."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.pop("environment")
        out.pop("extra")
        out["calibration"] = [r.to_dict() for r in self.calibration]
        out["refinement"] = [r.to_dict() for r in self.refinement]
        return {**self.environment, **out, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSettings:
        """Read the JSON form back (also of results written before this type)."""
        data = dict(data)
        env_keys = ("autoprune", "torch", "optuna", "python", "machine", "threads", "device")
        env = {k: data.pop(k) for k in env_keys if k in data}
        names = {f.name for f in fields(cls)} - {"environment", "extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        known["calibration"] = [LevelRecord.from_dict(r) for r in known.get("calibration") or []]
        known["refinement"] = [LevelRecord.from_dict(r) for r in known.get("refinement") or []]
        return cls(environment=env, extra=extra, **known)

    def get(self, key: str, default: Any = None) -> Any:
        """A setting by its JSON key (the environment's and unknown keys included)."""
        return self.to_dict().get(key, default)

    def __getitem__(self, key: str) -> Any:
        """As :meth:`get`, for a key that must be there."""
        return self.to_dict()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()


def plain(d: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of ``d`` (what a configuration's JSON form can hold)."""
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool, type(None)))}


def options_dict(*options: Any) -> dict[str, Any]:
    """``{"proxy": ..., "calibration": ..., "sensitivity": ...}`` from option dataclasses."""
    names = ("proxy", "calibration", "sensitivity")
    return {name: asdict(o) for name, o in zip(names, options)}


def study_setup(c: Configured, units: list[Unit]) -> dict[str, Any]:
    """What a study is made for: resuming it with another setup is refused."""
    deployment = deployment_of(c.objectives)
    form = {} if deployment.is_default else {"deployment": deployment.describe()}
    return form | {
        "scheme": repr(c.scheme),
        "units": [(u.name, u.size, u.low, u.high) for u in units],
        "objectives": [(o.name, o.direction) for o in c.objectives],
        "eps": c.eps,
        "relative": c.relative,
        "space": c.space,
        "prior": c.prior,
        "bounds": c.bounds.setting(),
        "options": options_dict(c.proxy, c.calibration, c.sensitivity),
        "data": c.data_name,
        "seed": c.seed,
    }


def run_settings(
    c: Configured, ctx: RunContext, study_name: str, prep: Preparation, refinement: Refinement
) -> RunSettings:
    """The settings a run records (:class:`RunSettings`)."""
    x = ctx.example_input
    return RunSettings(
        environment=environment(describe_device(x.device)),
        model_spec=model_spec(c.model),
        input_shape=list(x.shape[1:]),
        data=c.data_name,
        scheme=c.scheme.config() | {"op": c.scheme.op},
        recovery={"name": c.recovery.name, **plain(c.recovery.config())},
        objectives=[
            {
                "name": o.name,
                "direction": o.direction,
                "measured": o.metric.describe(),
                "search": "exact" if o.metric.deterministic else "measured ratio, few rounds",
            }
            for o in c.objectives
        ],
        deployment=ctx.deployment.to_dict(),
        eps=c.eps,
        relative=c.relative,
        sampler=c.sampler,
        space=c.space,
        prior=c.prior,
        prior_used=prior_used(c.prior, prep, c.scheme),
        bounds=c.bounds.setting(),
        units=[asdict(u) for u in prep.units],
        n_trials=c.budget.n_trials,
        timeout=c.budget.timeout,
        seed=c.seed,
        options=options_dict(c.proxy, c.calibration, c.sensitivity),
        tau=prep.tau,
        level_range=list(prep.level_range),
        target_level=prep.target_level,
        calibration=list(prep.calibration),
        refinement=refinement.records,
        sensitivity=prep.sensitivity,
        storage=c.storage_url(),
        study_name=study_name,
    )
