"""`python -m gastown` is the `gastown` command."""

from gastown.cli import main

raise SystemExit(main())
