"""autoprune: find how far a trained PyTorch model can be pruned, then prune it for real.

>>> import torch, autoprune as ap
>>> model = ap.create_model("resnet10", num_classes=10, input_shape=(1, 28, 28))
>>> x = torch.randn(1, 1, 28, 28)
>>> plan = ap.filter_prune(model, 0.5, x, physical=True)
>>> plan.physical
True
"""

__version__ = "0.1.0"

from . import (
    criteria,
    data,
    encoding,
    masking,
    metrics,
    models,
    objectives,
    schemes,
    structure,
    testing,
)
from .compressor import Compressor, Evaluation
from .data import Data, load_data
from .errors import AutopruneError, ConfigError, DataError, ModelError, PruningError
from .masking import apply_masks
from .models import create_model, load_checkpoint, register_model
from .objectives import Maximize, Minimize
from .plan import GroupPlan, LayerPlan, Plan, get_plan
from .recovery import LC, FineTune
from .result import CompressionResult
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
from .training import evaluate, recalibrate_bn, seed_everything, train

__all__ = [
    "AutopruneError",
    "BlockPrune",
    "Compose",
    "CompressionResult",
    "Compressor",
    "ConfigError",
    "Data",
    "DataError",
    "Evaluation",
    "FilterPrune",
    "FineTune",
    "GroupPlan",
    "LC",
    "LayerPlan",
    "Maximize",
    "Minimize",
    "ModelError",
    "NeuronPrune",
    "Plan",
    "Prune",
    "PruningError",
    "Quantize",
    "__version__",
    "apply_masks",
    "block_prune",
    "create_model",
    "criteria",
    "data",
    "encoding",
    "evaluate",
    "filter_prune",
    "get_plan",
    "load_checkpoint",
    "load_data",
    "masking",
    "materialize",
    "metrics",
    "models",
    "neuron_prune",
    "objectives",
    "prune",
    "quantize",
    "recalibrate_bn",
    "register_model",
    "schemes",
    "seed_everything",
    "structure",
    "testing",
    "train",
]
