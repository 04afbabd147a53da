"""pacecds: the composition root (the `pacecds` command) and, when installed, the bundled rules and schemas."""

# Before anything imports a dependency: on an unsupported Python, exit with a clear message (engine.pyversion).
import engine.pyversion  # noqa: F401
