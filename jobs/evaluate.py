"""Evaluate every finished stage and the legacy baseline on the golden set; write report.json/report.md/PNGs.

    python -m jobs.evaluate --section tiny [--run-id ID] [--rerun]
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> dict:
    from jobs._chain import stage_main

    return stage_main("evaluate", argv)


if __name__ == "__main__":
    main(sys.argv[1:])
