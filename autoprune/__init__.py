"""autoprune: find how far a trained PyTorch model can be pruned, then prune it for real.

>>> import torch, autoprune as ap
>>> model = ap.create_model("resnet10", num_classes=10, input_shape=(1, 28, 28))
>>> x = torch.randn(1, 1, 28, 28)
>>> plan = ap.filter_prune(model, 0.5, x, physical=True)
>>> plan.physical
True

The top level holds what most work needs. The modules hold the rest: ``autoprune.data``
(datasets), ``autoprune.models``, ``autoprune.objectives`` (throughput, size, MACs, ...),
``autoprune.metrics`` (counting and timing), ``autoprune.encoding`` (the sparse format),
``autoprune.criteria`` (importance scores), ``autoprune.compress`` (the search's stages),
``autoprune.errors`` and ``autoprune.spec``.
"""

__version__ = "0.1.0"

# the modules, for what the top level leaves out
from . import compress as compress
from . import criteria as criteria
from . import data as data
from . import encoding as encoding
from . import metrics as metrics
from . import models as models
from . import objectives as objectives
from . import schemes as schemes
from .compress import (
    CalibrationOptions,
    CompressionResult,
    Compressor,
    ProxyOptions,
    SensitivityOptions,
)
from .compress.sensitivity import analyze as analyze_sensitivity
from .data import load_data
from .errors import AutopruneError
from .models import create_model, list_models, register_model
from .objectives import Maximize, Minimize
from .plan import Plan, get_plan
from .recovery import LC, FineTune
from .schemes import (
    BlockPrune,
    Compose,
    FilterPrune,
    NeuronPrune,
    Prune,
    Quantize,
    block_prune,
    filter_prune,
    materialize,
    neuron_prune,
    prune,
    quantize,
)
from .training import evaluate, recalibrate_bn, train

__all__ = [
    "LC",
    "AutopruneError",
    "BlockPrune",
    "CalibrationOptions",
    "Compose",
    "CompressionResult",
    "Compressor",
    "FilterPrune",
    "FineTune",
    "Maximize",
    "Minimize",
    "NeuronPrune",
    "Plan",
    "Prune",
    "ProxyOptions",
    "Quantize",
    "SensitivityOptions",
    "__version__",
    "analyze_sensitivity",
    "block_prune",
    "create_model",
    "evaluate",
    "filter_prune",
    "get_plan",
    "list_models",
    "load_data",
    "materialize",
    "neuron_prune",
    "prune",
    "quantize",
    "recalibrate_bn",
    "register_model",
    "train",
]
