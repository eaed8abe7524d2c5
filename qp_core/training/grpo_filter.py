"""GRPO data filter (paper §4.3): keep prompts whose rollouts disagree on exactly one sub-task.

G rollouts per prompt from the stage-2 model are scored per sub-task (``qp_core.rewards.per_task_rewards``,
the eval metrics per query). A prompt is kept with target k when the reward of k varies across the
rollouts (std > ``vary_threshold``) while every other scored sub-task stays consistent (std ≤
``consistency_eps``). Why: when all rollouts score alike the group advantage is zero and GRPO learns
nothing; when several sub-tasks vary at once the scalar reward cannot say which one a rollout got right.

Scored sub-tasks are NER, Seg, TW and Taxonomy (the paper's metrics). Intent (free text, chrF) varies
under any sampling and the format reward moves with every sub-task, so neither takes part in the rule.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger(__name__)

FILTER_TASKS = ("ner", "seg", "tw", "taxonomy")


def _std(values: Sequence[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / n)


def select_target(
    rewards: dict[str, Sequence[float]],
    *,
    vary_threshold: float,
    consistency_eps: float,
    tasks: Sequence[str] = FILTER_TASKS,
) -> str | None:
    """The one task whose rewards vary over the G rollouts while all other ``tasks`` stay consistent; else None.

    ``rewards[task]`` holds the G rollout rewards of one prompt (0–1 scale).
    """
    stds = {t: _std(rewards[t]) for t in tasks if t in rewards}
    varying = [t for t, s in stds.items() if s > vary_threshold]
    if len(varying) != 1:
        return None
    target = varying[0]
    if any(s > consistency_eps for t, s in stds.items() if t != target):
        return None
    return target


def filter_prompts(
    model_dir: str | Path,
    rows: list[dict[str, Any]],
    *,
    rules_mode: str,
    context: bool,
    num_generations: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    batch_size: int,
    vary_threshold: float,
    consistency_eps: float,
    bf16: bool = True,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rollouts + selection; returns (kept rows with ``target``, summary with kept fraction per task)."""
    from qp_core.rewards import per_task_rewards
    from qp_core.training.data import unified_prompt
    from qp_core.training.generate import generate_texts

    prompts = [unified_prompt(r, rules_mode, context) for r in rows]
    rollouts = generate_texts(model_dir, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                              do_sample=True, temperature=temperature, top_p=top_p,
                              num_return_sequences=num_generations, bf16=bf16, seed=seed)
    kept: list[dict[str, Any]] = []
    reasons = {"kept": 0, "all_consistent": 0, "several_vary": 0, "other_inconsistent": 0}
    per_target: dict[str, int] = {t: 0 for t in FILTER_TASKS}
    for row, outs in zip(rows, rollouts):
        label = json.loads(row["label"]) if isinstance(row["label"], str) else row["label"]
        scores = [per_task_rewards(text, label, row["query"]) for text in outs]
        rewards = {t: [s[t] for s in scores] for t in FILTER_TASKS}
        target = select_target(rewards, vary_threshold=vary_threshold, consistency_eps=consistency_eps)
        if target is None:
            stds = {t: _std(v) for t, v in rewards.items()}
            n_vary = sum(s > vary_threshold for s in stds.values())
            reasons["all_consistent" if n_vary == 0 else "several_vary" if n_vary > 1 else "other_inconsistent"] += 1
            continue
        reasons["kept"] += 1
        per_target[target] += 1
        kept.append({**row, "target": target, "rollout_rewards": rewards})
    n = max(1, len(rows))
    summary = {
        "candidates": len(rows),
        "num_generations": num_generations,
        "kept": len(kept),
        "kept_fraction": round(len(kept) / n, 4),
        "kept_fraction_per_task": {t: round(c / n, 4) for t, c in per_target.items()},
        "kept_per_task": per_target,
        "outcomes": reasons,
        "vary_threshold": vary_threshold,
        "consistency_eps": consistency_eps,
    }
    logger.info("GRPO filter: kept %d/%d (%s)", len(kept), len(rows), per_target)
    return kept, summary


def sample_candidates(rows: list[dict[str, Any]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    rows = sorted(rows, key=lambda r: r["query"])
    return random.Random(seed).sample(rows, min(n, len(rows)))
