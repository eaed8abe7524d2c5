"""SFT stage 1 (unified + λ·aux) or stage 2 (recent annotations only, from stage 1); stage 0 with --stage 0.

    python -m jobs.train_sft --stage 1 --section tiny [--run-id ID]

Resumable: a rerun continues from the stage's newest checkpoint; a finished stage is skipped.
"""

from __future__ import annotations

import sys

STAGE_NAMES = {"0": "base", "1": "sft1", "2": "sft2"}


def main(argv: list[str] | None = None) -> dict:
    from jobs._chain import stage_main

    argv = list(sys.argv[1:] if argv is None else argv)
    stage = "1"
    if "--stage" in argv:
        i = argv.index("--stage")
        stage = argv[i + 1]
        del argv[i:i + 2]
    if stage not in STAGE_NAMES:
        raise SystemExit(f"--stage must be one of {sorted(STAGE_NAMES)}")
    return stage_main(STAGE_NAMES[stage], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
