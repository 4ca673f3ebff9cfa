"""`python -m gastown.agent`: run the in-pod agent runtime."""

import sys

from gastown.agent.runtime import main

sys.exit(main())
