"""Scheme operators: each a class with a one-line function twin.

======================  ======================  ======================================
class                   function                removes
======================  ======================  ======================================
:class:`Prune`          :func:`prune`           single weights (unstructured)
:class:`FilterPrune`    :func:`filter_prune`    conv output channels (and coupled ones)
:class:`NeuronPrune`    :func:`neuron_prune`    Linear output neurons
:class:`BlockPrune`     :func:`block_prune`     blocks of a weight matrix
:class:`Quantize`       :func:`quantize`        distinct values (k-means weight sharing)
:class:`Compose`                                several of the above, in order
======================  ======================  ======================================
"""

from .base import Pruning, Scheme, check_sparsity, schemes
from .block import BlockPrune, block_prune
from .compose import Compose
from .quantize import Quantize, quantize
from .structured import (
    FilterPrune,
    Materialized,
    NeuronPrune,
    StructuredPrune,
    apply_plan,
    filter_prune,
    materialize,
    neuron_prune,
)
from .unstructured import Prune, prune

__all__ = [
    "BlockPrune",
    "Compose",
    "FilterPrune",
    "Materialized",
    "NeuronPrune",
    "Prune",
    "Pruning",
    "Quantize",
    "Scheme",
    "StructuredPrune",
    "apply_plan",
    "block_prune",
    "check_sparsity",
    "filter_prune",
    "materialize",
    "neuron_prune",
    "prune",
    "quantize",
    "schemes",
]
