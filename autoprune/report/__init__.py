"""Reports a person can read: ``report.md`` and a self-contained ``report.html``.

    autoprune report RUN_DIR

rebuilds both from a run's stored results (``result.json``, the models, and
``sensitivity.json`` where a sensitivity analysis ran).
"""

from .build import build

__all__ = ["build"]
