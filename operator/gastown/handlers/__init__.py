"""kopf registrations (thin): settings at start-up, watch events into the store, a loop per Town.

Importing this package registers the handlers with kopf's default registry.
"""

from gastown.handlers import startup, towns, watches

__all__ = ["startup", "towns", "watches"]
