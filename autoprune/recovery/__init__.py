"""Recovery: regain accuracy after pruning.

* :class:`FineTune`: masked fine-tuning, at once or with gradual pruning (the default);
* :class:`LC`: learning-compression (Carreira-Perpinan & Idelbayev, 2018).

Both take the original model and a scheme carrying the plan's sparsities, and return a
model compressed exactly to them.
"""

from ..registry import Registry
from .base import Recovery
from .finetune import FineTune
from .lc import LC

recoveries = Registry("recovery")
recoveries.add("lc", LC)
recoveries.add("finetune", FineTune)


def register_recovery(name: str, cls: type[Recovery]) -> None:
    """Register a :class:`Recovery` class under ``name``, for specs."""
    recoveries.add(name, cls)


def list_recoveries() -> list[str]:
    """The registered recovery names.

    >>> list_recoveries()
    ['finetune', 'lc']
    """
    return recoveries.names()


__all__ = ["LC", "FineTune", "Recovery", "list_recoveries", "recoveries", "register_recovery"]
