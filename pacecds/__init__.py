"""pacecds: the composition root (the `pacecds` command) and, when installed, the bundled rules and schemas."""
