"""Entry point for ``python -m monitor``."""

from monitor.entry import main

raise SystemExit(main())
