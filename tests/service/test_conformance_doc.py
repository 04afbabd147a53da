"""docs/cds-hooks-conformance.md says which checklist rows are tested: each such row must have a test named by it."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_row_marked_tested_has_a_test_carrying_its_id():
    doc = (ROOT / "docs" / "cds-hooks-conformance.md").read_text()
    names = set()
    for f in (ROOT / "tests" / "service").glob("test_*.py"):
        names |= set(re.findall(r"def (test_\w+)", f.read_text()))
    tested = []
    for cells in re.findall(r"^\| ([A-I][0-9][^|]*) \| [^|]* \| tested[^|]* \|", doc, re.M):
        for part in cells.split(","):
            part = part.strip()
            m = re.fullmatch(r"([A-I])(\d+)(?:–\1?(\d+))?", part)
            assert m, part
            lo, hi = int(m.group(2)), int(m.group(3) or m.group(2))
            tested += [f"{m.group(1)}{i}" for i in range(lo, hi + 1)]
    assert len(tested) > 60
    missing = [row for row in tested if not any(re.search(rf"_{row}_", n) for n in names)]
    assert missing == []
