"""``python -m bridge`` is ``sms-bridge``."""

from bridge.cli import main

raise SystemExit(main())
