"""``python -m annotations``: see :mod:`annotations.cli`."""

from annotations.cli import main

raise SystemExit(main())
