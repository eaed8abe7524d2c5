"""Trainer callbacks of the chain: progress lines (step, loss) into the run's log while SFT/GRPO train."""

from __future__ import annotations

from qp_core.training.run import ChainContext


class ProgressCallback:
    """A transformers TrainerCallback (duck-typed: created lazily so importing this module stays cheap)."""

    def __new__(cls, ctx: ChainContext, stage: str, max_steps: int):
        from transformers import TrainerCallback

        class _CB(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kw):
                if logs and "loss" in logs:
                    ctx.progress(f"[{stage}] step {state.global_step}/{max_steps} loss {logs['loss']:.4f}")

        return _CB()
