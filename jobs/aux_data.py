"""Auxiliary pseudo-labelled data (Spark mapInArrow + legacy pipeline) -> training/aux/task=<t>.

    python -m jobs.aux_data --section tiny [--dt YYYY-MM-DD] [--run-id ID]
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None, spark=None) -> dict:
    from jobs._chain import stage_main

    return stage_main("aux", argv, **({"spark": spark} if spark is not None else {}))


if __name__ == "__main__":
    main(sys.argv[1:])
