"""GRPO data filter: G rollouts per prompt from the stage-2 model; keep prompts varying on exactly one sub-task.

    python -m jobs.grpo_filter --section tiny [--run-id ID] [--rerun]
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> dict:
    from jobs._chain import stage_main

    return stage_main("filter", argv)


if __name__ == "__main__":
    main(sys.argv[1:])
