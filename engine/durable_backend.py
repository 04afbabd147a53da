"""The only module that imports durable-rules; its quirks stay here.

What we rely on (checked by tests/engine/test_durable_backend.py, which fails loudly if a
durable-rules release changes it):
- a fact asserted with `assert_fact` is matched by every rule whose condition holds (an
  event from `post` is consumed by the first rule only, so we never post events);
- a fact that no rule matches raises MessageNotHandledException: that means "no rule fired";
- a ruleset holds at most 1024 live sessions, so every session is deleted in a `finally`;
- the stock Host starts timer threads that dispatch actions in the background; our host
  does not, so actions run only inside our own call;
- `$ex`/`$nex` (attribute exists) can spin forever on a lone condition: the compiler never
  emits them and tests presence with explicit boolean attributes instead.
"""

from __future__ import annotations

import itertools
import threading
import uuid

from durable import engine as _durable

_names = itertools.count(1)


class _QuietHost(_durable.Host):
    """A Host without background dispatch threads: nothing runs outside our calls."""

    def _run(self):  # noqa: D401 - overriding the timer start-up
        return None


class CompiledRules:
    """One durable-rules ruleset, its own host, and a lock around each session.

    The C engine keeps per-ruleset queues; a lock per ruleset keeps one evaluation's
    assert/act/delete sequence from interleaving with another's.
    """

    def __init__(self, label: str, conditions: dict[str, dict]):
        self.name = f"{label}_{next(_names)}"
        self._fired: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        definition = {}
        for rule_name, expression in conditions.items():
            definition[rule_name] = {"all": [{"m": expression}], "run": self._action(rule_name)}
        self._host = _QuietHost()
        if definition:
            self._host.register_rulesets({self.name: definition})
        self._empty = not definition

    def _action(self, rule_name: str):
        def run(c):
            self._fired[c.m.sid].append(rule_name)

        return run

    def match(self, message: dict) -> list[str]:
        """Names of the rules whose condition holds for this one message."""
        if self._empty:
            return []
        sid = uuid.uuid4().hex
        with self._lock:
            self._fired[sid] = []
            try:
                try:
                    self._host.assert_fact(self.name, dict(message, sid=sid))
                except _durable.MessageNotHandledException:
                    pass
                return list(self._fired[sid])
            finally:
                del self._fired[sid]
                self._host.delete_state(self.name, sid)
