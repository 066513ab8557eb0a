"""``python -m lorabench`` runs the command-line interface."""

from lorabench.cli import main

raise SystemExit(main())
