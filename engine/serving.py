"""The ruleset a long-running service evaluates with, and its safe reload.

A clinician's edit to rules/ reaches a running service without a restart, but only a tree
that loads cleanly (and passes the optional release check) ever replaces the ruleset that is
serving: a broken file leaves the old ruleset in place and its errors on record.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

from . import rulestree
from .loader import RulesetLoadError
from .ruleset import Ruleset, load_ruleset

log = logging.getLogger("pacecds.rules")


class RulesetHolder:
    """Holds the serving ruleset; `reload()` swaps in a new one only if it loads cleanly.

    check: optional callable(rules_dir) -> list of problems (e.g. a release manifest check);
    any problem refuses the new tree just like a load error.
    """

    def __init__(self, rules_dir: str | Path, ruleset: Ruleset | None = None, check=None):
        self.rules_dir = Path(rules_dir)
        self._check = check
        self._lock = threading.Lock()
        self._fingerprint = rulestree.fingerprint(self.rules_dir)
        self.last_errors: list[str] = []
        # Told of every reload attempt of a changed tree: True (a new ruleset serves) or False (refused).
        self.on_reload: Callable[[bool], None] | None = None
        self._current = ruleset if ruleset is not None else self._load()

    @property
    def current(self) -> Ruleset:
        return self._current

    def _load(self) -> Ruleset:
        problems = self._check(self.rules_dir) if self._check else []
        if problems:
            raise RulesetLoadError(list(problems))
        return load_ruleset(self.rules_dir)

    def reload(self, force: bool = False) -> bool:
        """Load the tree again if it changed; True when a new ruleset now serves."""
        with self._lock:
            fingerprint = rulestree.fingerprint(self.rules_dir)
            if fingerprint == self._fingerprint and not force:
                return False
            self._fingerprint = fingerprint
            try:
                new = self._load()
            except RulesetLoadError as exc:
                self.last_errors = exc.errors
                log.error("rules in %s do not load; still serving %s %s (sha256 %s):\n  %s", self.rules_dir,
                          self._current.name, self._current.version, self._current.sha256, "\n  ".join(exc.errors))
                self._tell(False)
                return False
            old, self._current, self.last_errors = self._current, new, []
            log.warning("rules reloaded: %s %s (sha256 %s) replaces %s %s (sha256 %s)", new.name, new.version,
                        new.sha256, old.name, old.version, old.sha256)
        self._tell(True)
        return True

    def _tell(self, ok: bool) -> None:
        if self.on_reload is not None:
            try:
                self.on_reload(ok)
            except Exception:  # counting a reload must never undo or fail it
                log.exception("on_reload callback failed")

    def watch(self, interval_s: float = 5.0) -> threading.Thread:
        """Poll the tree in a daemon thread; each change is loaded once."""
        stop = threading.Event()

        def loop():
            while not stop.wait(interval_s):
                try:
                    self.reload()
                except Exception:  # a watcher must never die silently and stop reloads
                    log.exception("rules watcher failed; will retry")

        thread = threading.Thread(target=loop, name="pacecds-rules-watch", daemon=True)
        thread.stop = stop
        thread.start()
        return thread
