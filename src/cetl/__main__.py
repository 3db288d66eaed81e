"""``python -m cetl`` (and ``torchrun -m cetl``) runs the command line."""

from cetl.cli import main

raise SystemExit(main())
