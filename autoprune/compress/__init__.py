"""The search, as a pipeline of small stages that pass typed values.

==================  ====================================================================
module              stage
==================  ====================================================================
``options``         proxy and calibration options, the budget, bounds (checked once)
``context``         the frozen :class:`RunContext` every stage reads; the time budget
``space``           search units (operator and range) and the Optuna parameter mapping
``study``           the Optuna study: sampler, constraint, storage, resume
``claims``          preparing and finalizing a shared study exactly once
``proxy``           scoring a candidate cheaply (shared with the sensitivity analysis)
``sensitivity``     per-unit sensitivity analysis, and its options
``calibration``     uniform levels recovered for real: the search's threshold
``preparation``     bounds, allocation prior and calibration, stored with the study
``finalists``       which plans are recovered, in which order (a pure selection)
``refinement``      the held plan's level raised while eps holds
``records``         one record type for levels recovered for real; the preparation
``measure``         measurements of a model, before and after
``settings``        the run's typed settings
``result``          what a run returns, saved and loaded
``compressor``      :class:`Compressor`: a cheap constructor; ``run()`` calls the stages
==================  ====================================================================
"""

from .bounds import Bounds
from .compressor import Compressor, Work
from .measure import Measurements
from .options import Budget, CalibrationOptions, ProxyOptions
from .result import CompressionResult
from .sensitivity import Sensitivity, SensitivityOptions, analyze
from .study import list_samplers, register_sampler

__all__ = [
    "Bounds",
    "Budget",
    "CalibrationOptions",
    "CompressionResult",
    "Compressor",
    "Measurements",
    "ProxyOptions",
    "Sensitivity",
    "SensitivityOptions",
    "Work",
    "analyze",
    "list_samplers",
    "register_sampler",
]
