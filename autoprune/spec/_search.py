"""The spec's ``search`` section, and the options objects its values become."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from .. import _checks
from ..errors import AutopruneError, ConfigError
from ..registry import did_you_mean
from ._checkers import SpecError, _abspath, _keys, _mapping, _number, _str

SEARCH = [
    "sampler",
    "trials",
    "timeout",
    "storage",
    "study",
    "seed",
    "bounds",
    "space",
    "evaluation",
    "max_attempts",
    "refine",
    "trial_timeout",
    "max_failures",
    "prior",
]
# search.evaluation's keys, and the option each sets: (ProxyOptions or CalibrationOptions, field)
EVALUATION = {
    "bn_batches": ("proxy", "bn_batches"),
    "finetune_epochs": ("proxy", "finetune_epochs"),
    "min_finetune_steps": ("proxy", "min_finetune_steps"),
    "finetune_lr": ("proxy", "finetune_lr"),
    "val_batches": ("proxy", "val_batches"),
    "calibrate": ("calibration", "enabled"),
    "calibration_epochs": ("calibration", "epochs"),
    "calibration_steps": ("calibration", "steps"),
    "calibration_share": ("calibration", "share"),
    "calibration_threshold": ("calibration", "threshold"),
}


def search_section(raw: Any, base_dir: str) -> dict:
    from ..compress.preparation import PRIORS
    from ..compress.space import SPACES
    from ..compress.study import samplers

    raw = _mapping("search", raw)
    _keys("search", raw, SEARCH)
    sampler = _str("search.sampler", raw.get("sampler", "tpe"))
    if sampler not in samplers:
        raise SpecError(
            f"search.sampler: unknown sampler {sampler!r}"
            f"{did_you_mean(sampler, samplers.names())}; known: {', '.join(samplers.names())}"
        )
    trials, timeout = raw.get("trials", 30), raw.get("timeout")
    if trials is None and timeout is None:
        raise SpecError("search.trials: give a number of trials or a search.timeout")
    budget = _build(
        "search",
        _budget,
        trials,
        timeout,
        raw.get("trial_timeout"),
        raw.get("max_failures", 5),
    )
    space = _str("search.space", raw.get("space", "offsets"))
    _build("search", _checks.choice, "space", space, SPACES)
    prior = _str("search.prior", raw.get("prior", "auto"))
    _build("search", _checks.choice, "prior", prior, PRIORS)
    bounds = _bounds(raw.get("bounds"), base_dir)
    evaluation = _mapping("search.evaluation", raw.get("evaluation"))
    for key in evaluation:
        if key.startswith("sensitivity_"):
            raise SpecError(
                f"search.evaluation.{key}: the sensitivity analysis's options are the "
                f"'sensitivity' section's (e.g. sensitivity: {{{key[12:]}: ...}})"
            )
    _keys("search.evaluation", evaluation, list(EVALUATION))
    evaluation_options(evaluation)
    storage = raw.get("storage")
    if storage is not None:
        _str("search.storage", storage)
    return {
        "sampler": sampler,
        "trials": budget.n_trials,
        "timeout": budget.timeout,
        "trial_timeout": budget.trial_timeout,
        "max_failures": budget.max_failures,
        "storage": storage,
        "study": _str("search.study", raw.get("study", "autoprune")),
        "seed": _number("search.seed", raw.get("seed", 0), integer=True),
        "bounds": bounds,
        "space": space,
        "prior": prior,
        "evaluation": evaluation,
        "max_attempts": _number(
            "search.max_attempts", raw.get("max_attempts", 4), 1, None, integer=True
        ),
        "refine": _number("search.refine", raw.get("refine", 2), 0, None, integer=True),
    }


def _budget(trials: Any, timeout: Any, trial_timeout: Any, max_failures: Any) -> Any:
    from ..compress.options import Budget

    return Budget(trials, timeout, trial_timeout, max_failures)


# the Python names of search options, as the spec's keys spell them
_SEARCH_NAMES = {
    "n_trials": "trials",
    "bounds": "bounds",
    "space": "space",
    "timeout": "timeout",
    "trial_timeout": "trial_timeout",
    "max_failures": "max_failures",
}


def _build(path: str, fn: Callable, *args: Any) -> Any:
    """Call a constructor or check; its ``ConfigError`` is relayed under ``path``."""
    try:
        return fn(*args)
    except ConfigError as exc:
        msg = str(exc)
        name, _, rest = msg.partition(":")
        head, _, tail = name.partition("[")
        if head in _SEARCH_NAMES:
            name = _SEARCH_NAMES[head] + (f"[{tail}" if tail else "")
        raise SpecError(f"{path}.{name}:{rest}") from None


def _bounds(bounds: Any, base_dir: str) -> Any:
    """Check ``search.bounds`` (any of its shapes); returns it as the resolved spec keeps it."""
    from ..compress.bounds import Bounds

    if isinstance(bounds, str) and bounds.endswith(".json"):
        bounds = _abspath(base_dir, bounds)
        if not os.path.isfile(bounds):
            raise SpecError(f"search.bounds: file not found: {bounds}")
    try:
        Bounds.parse(bounds, "search.bounds")
    except AutopruneError as exc:
        message = str(exc)
        prefix = "" if message.startswith("search.bounds") else "search.bounds: "
        raise SpecError(prefix + message) from None
    if isinstance(bounds, Mapping):
        return {str(k): list(v) for k, v in bounds.items()}
    return list(bounds) if isinstance(bounds, (list, tuple)) else bounds


def evaluation_options(evaluation: Mapping[str, Any]) -> tuple[Any, Any]:
    """``search.evaluation``'s flat keys as ``(ProxyOptions, CalibrationOptions)``.

    >>> proxy, calibration = evaluation_options(
    ...     {"bn_batches": 5, "calibration_steps": 2, "calibration_threshold": "held"}
    ... )
    >>> proxy.bn_batches, calibration.steps, calibration.threshold
    (5, 2, 'held')
    """
    from ..compress.options import CalibrationOptions, ProxyOptions

    parts: dict[str, dict[str, Any]] = {"proxy": {}, "calibration": {}}
    for key, value in evaluation.items():
        part, name = EVALUATION[key]
        parts[part][name] = value
    try:
        return ProxyOptions(**parts["proxy"]), CalibrationOptions(**parts["calibration"])
    except ConfigError as exc:
        msg = str(exc)
        name, _, rest = msg.partition(":")
        flat = next((k for k, v in EVALUATION.items() if ".".join(v) == name), name)
        raise SpecError(f"search.evaluation.{flat}:{rest}") from None


def sensitivity_options(section: Mapping[str, Any]) -> Any:
    """The ``sensitivity:`` section as :class:`~autoprune.SensitivityOptions`."""
    from ..compress.sensitivity import SensitivityOptions

    options: dict[str, Any] = dict(section)
    if isinstance(options.get("levels"), list):
        options["levels"] = tuple(options["levels"])
    try:
        return SensitivityOptions(**options)
    except ConfigError as exc:
        raise SpecError(str(exc)) from None
