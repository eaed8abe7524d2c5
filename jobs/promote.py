"""Register the run's final model (versions + metrics) and promote it if the gate passes.

    python -m jobs.promote --section tiny [--run-id ID] [--rerun]
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> dict:
    from jobs._chain import stage_main

    return stage_main("promote", argv)


if __name__ == "__main__":
    main(sys.argv[1:])
