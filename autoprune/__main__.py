"""``python -m autoprune`` is the ``autoprune`` command."""

from .cli import main

raise SystemExit(main())
