"""Stage 3: multi-reward GRPO with TRL's GRPOTrainer, starting from (and KL-anchored to) the stage-2 model.

Rewards are the evaluation metrics per query (``qp_core.rewards``): one function per sub-task plus the
format reward, weighted by ``grpo.weights`` (w_k). The reference policy for the β·KL term is the model
GRPOTrainer is given, i.e. the stage-2 model.

``multi_objective_aggregation = "sum_then_normalize"`` (TRL's default, chosen deliberately): the paper's
reward is R = Σ_k w_k r_k and its advantage is normalised within the group (eq. 10–11), which is exactly
sum-then-normalise. The alternative, ``normalize_then_sum`` (GDPO), divides each reward by its own
within-group std (+1e-4) before weighting: after our filter the non-target sub-tasks are nearly constant,
so any tiny incidental variation on them (a 0.01 F1 wobble) would be blown up to the same magnitude as
the target's real signal and the w_k would stop meaning anything. Summing first keeps small differences
small and lets the filtered target sub-task dominate the advantage, as the filter intends.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from qp_core.training.config import GRPOSettings
from qp_core.training.sft import StageResult, latest_checkpoint, load_stage_result, setup_torch, write_stage_result, _copy_generation_config

logger = logging.getLogger(__name__)

def reward_functions(weights: dict[str, float]) -> tuple[list[Callable], list[float]]:
    """TRL reward functions (one per sub-task + format) and weights w_k: ``conf/rewards.yaml`` unless the
    training section overrides them (``grpo.weights``)."""
    from qp_core.rewards import reward_funcs_and_weights

    return reward_funcs_and_weights(weights=weights or None)


def grpo_config(out_dir: str | Path, g: GRPOSettings, weights: list[float], *, bf16: bool, seed: int, use_cpu: bool):
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(out_dir),
        max_steps=g.max_steps,
        per_device_train_batch_size=g.per_device_batch,
        num_generations=g.num_generations,
        max_completion_length=g.max_completion_length,
        temperature=g.temperature,
        learning_rate=g.learning_rate,
        beta=g.beta,
        reward_weights=weights,
        multi_objective_aggregation=g.multi_objective_aggregation,
        scale_rewards=g.scale_rewards,
        loss_type=g.loss_type,
        use_vllm=g.use_vllm,
        bf16=bf16,
        use_cpu=use_cpu,
        logging_steps=g.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=g.save_steps,
        save_total_limit=1,
        report_to=[],
        seed=seed,
        disable_tqdm=True,
        lr_scheduler_type="constant",
        warmup_steps=0,
        # TRL turns gradient checkpointing on by default; for models that fit many times over it only
        # recomputes activations (slower steps), so it follows the section (on for the 8B profile)
        gradient_checkpointing=g.gradient_checkpointing,
    )


def train_grpo(
    init_dir: str | Path,
    rows: list[dict[str, Any]],
    out_dir: str | Path,
    g: GRPOSettings,
    *,
    rules_mode: str,
    context: bool = True,
    bf16: bool = True,
    seed: int = 0,
    threads: int = 0,
) -> StageResult:
    """GRPO on the filtered rows (prompt + label/query/target columns the rewards read)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    from qp_core.prompt import neutralize_messages
    from qp_core.training.data import unified_prompt

    out = Path(out_dir)
    done = load_stage_result(out)
    if done is not None:
        return done
    out.mkdir(parents=True, exist_ok=True)
    setup_torch(threads)
    t0 = time.time()
    if not rows:
        logger.warning("GRPO: the filter kept no prompts; stage 3 keeps the stage-2 model unchanged")
        result = StageResult(Path(init_dir), [], 0.0, {"skipped": "no filtered prompts"})
        write_stage_result(out, result)
        return result
    tok = AutoTokenizer.from_pretrained(str(init_dir))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    data = Dataset.from_list([
        {"prompt": neutralize_messages(unified_prompt(r, rules_mode, context), tok), "label": r["label"] if isinstance(r["label"], str) else json.dumps(r["label"], ensure_ascii=False),
         "query": r["query"], "target": r.get("target", "")}
        for r in rows
    ])
    funcs, weights = reward_functions(g.weights)
    model = AutoModelForCausalLM.from_pretrained(str(init_dir), dtype=torch.float32)
    args = grpo_config(out, g, weights, bf16=bf16, seed=seed, use_cpu=not torch.cuda.is_available())
    rollout = None
    if g.query_grammar and not g.use_vllm:
        from qp_core.training.generate import grammar_rollout_func

        queries = {_prompt_key(p): q for p, q in zip(data["prompt"], data["query"])}
        rollout = grammar_rollout_func(lambda prompt: queries.get(_prompt_key(prompt)))
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=data, processing_class=tok,
                          rollout_func=rollout)
    trainer.train(resume_from_checkpoint=latest_checkpoint(out))
    model_dir = out / "model"
    trainer.save_model(str(model_dir))
    tok.save_pretrained(str(model_dir))
    _copy_generation_config(init_dir, model_dir)
    result = StageResult(model_dir, list(trainer.state.log_history), time.time() - t0,
                         {"prompts": len(rows), "steps": trainer.state.global_step,
                          "reward_funcs": [f.__name__ for f in funcs], "reward_weights": weights,
                          "multi_objective_aggregation": g.multi_objective_aggregation,
                          "query_grammar_rollouts": rollout is not None})
    write_stage_result(out, result)
    return result


def _prompt_key(prompt: Any) -> str:
    return json.dumps(prompt, ensure_ascii=False, sort_keys=True)
