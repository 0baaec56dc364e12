"""Allow ``python -m rportd``."""

from rportd.cli import main

raise SystemExit(main())
