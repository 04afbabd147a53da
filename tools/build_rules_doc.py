#!/usr/bin/env python3
"""Write docs/rules.md, the clinician's rule reference, from a rules tree (governance.reference builds it).

Run: python tools/build_rules_doc.py [RULES_DIR]   (default: rules/; writes docs/ beside RULES_DIR)
"""
from __future__ import annotations

import sys
from pathlib import Path

from governance.reference import build

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rules = Path(argv[0]) if argv else ROOT / "rules"
    out = rules.resolve().parent / "docs" / "rules.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(build(rules))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
