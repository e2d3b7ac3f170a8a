"""``python -m nio_delayed``: the ``nio-delayed`` command."""

from .cli import main

raise SystemExit(main())
