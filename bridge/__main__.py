"""``python -m bridge`` is ``sms-bridge``."""

from bridge.cli.main import main

raise SystemExit(main())
