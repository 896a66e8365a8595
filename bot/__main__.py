"""`python -m bot` is the same as `imagine-bot`."""

from bot.cli import main

raise SystemExit(main())
