"""The bundled rules are a release: every file matches rules/ruleset.yaml, so the service starts in production.

A change to a rule, fact or value set must come with `pacecds release rules --version X.Y.Z --approved-by ...`;
this test names the files that changed without one.
"""

from governance.manifest import check_manifest
from tests.conftest import RULES


def test_bundled_rules_match_their_release_manifest():
    assert check_manifest(RULES, public_keys=[]) == []
