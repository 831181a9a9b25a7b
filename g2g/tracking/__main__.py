"""``python -m g2g.tracking relog FILE``."""

from g2g.tracking.store import main

raise SystemExit(main())
