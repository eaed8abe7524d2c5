"""Stage 3: multi-reward GRPO (TRL GRPOTrainer) from the stage-2 model on the filtered prompts.

    python -m jobs.train_grpo --section tiny [--run-id ID] [--rerun]
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> dict:
    from jobs._chain import stage_main

    return stage_main("grpo", argv)


if __name__ == "__main__":
    main(sys.argv[1:])
