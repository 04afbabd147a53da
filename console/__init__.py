"""The pacecds web console: cards as the EHR shows them, the pacing chart, rules, releases, the decision log.

Sits between the service and the app factory: server.py mounts it with `register_console`."""
from .views import register_console

__all__ = ["register_console"]
