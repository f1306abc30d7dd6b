"""`python -m app`: the same entry as the `dictate` console script."""

from app.cli import main

raise SystemExit(main())
