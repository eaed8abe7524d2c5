"""SFT stages with TRL's SFTTrainer: conversational prompt/completion rows, loss on the completion only.

Why prompt/completion instead of a ``messages`` column with ``assistant_only_loss``: TRL tokenises the
prompt with ``add_generation_prompt=True`` and the completion after it, and builds ``completion_mask``
from that boundary, so masking does not depend on ``{% generation %}`` markers in each profile's chat
template (gemma's and Qwen's templates lack them). ``packing`` stays off: packed rows would let one
example attend to another's tokens; ``tests/test_training_chain.py`` checks the labels are -100 exactly on
the prompt tokens.

Resumable: checkpoints go to ``<out>/checkpoint-*`` and a rerun resumes from the newest one; the final
model lands in ``<out>/model`` with ``log_history.json`` beside it, and a finished stage is skipped.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qp_core.training.config import SFTStageSettings

logger = logging.getLogger(__name__)

DONE_FILE = "stage.json"


@dataclass
class StageResult:
    """What a finished stage left behind: model dir, its trainer log history, wall time."""

    model_dir: Path
    log_history: list[dict[str, Any]]
    wall_s: float
    extra: dict[str, Any]


def load_stage_result(out_dir: str | Path) -> StageResult | None:
    """The result of a finished stage in ``out_dir``, or None (not run, interrupted, or an unreadable marker)."""
    from qp_core.training.state import read_json_marker

    meta = read_json_marker(Path(out_dir) / DONE_FILE)
    if meta is None or "model_dir" not in meta:
        return None
    hist_path = Path(out_dir) / "log_history.json"
    try:
        history = json.loads(hist_path.read_text(encoding="utf-8")) if hist_path.exists() else []
    except ValueError:
        history = []
    return StageResult(Path(meta["model_dir"]), history, float(meta.get("wall_s", 0.0)), meta.get("extra", {}))


def write_stage_result(out_dir: str | Path, result: StageResult) -> None:
    """Log history first, then the marker (atomically): the marker is what says the stage is done."""
    from qp_core.training.state import write_json_atomic

    out = Path(out_dir)
    write_json_atomic(out / "log_history.json", result.log_history)
    write_json_atomic(out / DONE_FILE, {"model_dir": str(result.model_dir), "wall_s": result.wall_s,
                                        "extra": result.extra})


def latest_checkpoint(out_dir: str | Path) -> str | None:
    """The newest *complete* checkpoint (``state.latest_complete_checkpoint``): resume never picks a half-written one."""
    from qp_core.training.state import latest_complete_checkpoint

    return latest_complete_checkpoint(out_dir)


def setup_torch(threads: int) -> None:
    """Thread count before any work (DESIGN §5: thread settings dominate CPU speed on 2 cores).

    ``threads`` > 0 pins that many (the per-section value measured fastest on this machine); 0 leaves
    torch's default, one thread per core of whatever machine runs the stage.
    """
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


def sft_config(out_dir: str | Path, st: SFTStageSettings, *, bf16: bool, seed: int, use_cpu: bool):
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(out_dir),
        max_steps=st.max_steps,
        per_device_train_batch_size=st.batch_size,
        gradient_accumulation_steps=st.grad_accum,
        learning_rate=st.learning_rate,
        lr_scheduler_type=st.lr_scheduler,
        warmup_steps=st.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of max_steps
        weight_decay=0.0,
        max_length=st.max_length,
        packing=False,
        completion_only_loss=True,
        bf16=bf16,
        use_cpu=use_cpu,
        logging_steps=st.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=st.save_steps,
        save_total_limit=1,
        save_only_model=False,
        report_to=[],
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        dataset_num_proc=None,
        disable_tqdm=True,
        eos_token=None,
        # TRL 1.x turns gradient checkpointing on by default: for a model that fits many times over it only
        # recomputes activations in the backward pass; on for the large profiles only (conf/training.yaml)
        gradient_checkpointing=st.gradient_checkpointing,
    )


def make_sft_trainer(init_dir: str | Path, examples: list[dict[str, Any]], out_dir: str | Path, st: SFTStageSettings,
                     *, bf16: bool = True, seed: int = 0, callbacks: list | None = None):
    """An SFTTrainer on ``examples`` starting from the model in ``init_dir`` (not yet trained)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from qp_core.prompt import neutralize_messages
    from qp_core.training.data import to_hf_dataset

    use_cpu = not torch.cuda.is_available()
    tok = AutoTokenizer.from_pretrained(str(init_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # user text is neutralised against this tokenizer's control tokens, exactly as serving renders it
    # (engines.base.render_chat): TRL applies the chat template to the prompt messages as given
    examples = [{**e, "prompt": neutralize_messages(e["prompt"], tok)} for e in examples]
    model = AutoModelForCausalLM.from_pretrained(str(init_dir), dtype=torch.float32)
    args = sft_config(out_dir, st, bf16=bf16, seed=seed, use_cpu=use_cpu)
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=to_hf_dataset(examples),
        processing_class=tok,
        callbacks=callbacks,
    )


def train_sft(
    init_dir: str | Path,
    examples: list[dict[str, Any]],
    out_dir: str | Path,
    st: SFTStageSettings,
    *,
    bf16: bool = True,
    seed: int = 0,
    threads: int = 0,
    callbacks: list | None = None,
) -> StageResult:
    """Run one SFT stage (or return its saved result); resumes from ``out_dir``'s newest checkpoint."""
    out = Path(out_dir)
    done = load_stage_result(out)
    if done is not None:
        logger.info("SFT stage in %s already done: %s", out, done.model_dir)
        return done
    out.mkdir(parents=True, exist_ok=True)
    setup_torch(threads)
    t0 = time.time()
    trainer = make_sft_trainer(init_dir, examples, out, st, bf16=bf16, seed=seed, callbacks=callbacks)
    resume = latest_checkpoint(out)
    if resume:
        logger.info("resuming SFT from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    model_dir = out / "model"
    trainer.save_model(str(model_dir))
    trainer.processing_class.save_pretrained(str(model_dir))
    _copy_generation_config(init_dir, model_dir)
    result = StageResult(model_dir, list(trainer.state.log_history), time.time() - t0,
                         {"examples": len(examples), "steps": trainer.state.global_step})
    write_stage_result(out, result)
    return result


def _copy_generation_config(src: str | Path, dst: str | Path) -> None:
    """Keep the base model's generation config (EOS ids) — the trainer may not rewrite it."""
    import shutil

    src_gc = Path(src) / "generation_config.json"
    if src_gc.exists():
        shutil.copy2(src_gc, Path(dst) / "generation_config.json")
    for name in ("qp_model.json",):
        if (Path(src) / name).exists() and not (Path(dst) / name).exists():
            shutil.copy2(Path(src) / name, Path(dst) / name)
