"""GRPO data filter (paper §4.3): keep prompts whose rollouts disagree on exactly one sub-task.

G rollouts per prompt from the stage-2 model are scored per sub-task (``qp_core.rewards.per_task_rewards``,
the eval metrics per query). A prompt is kept with target k when the reward of k varies across the
rollouts (std > ``vary_threshold``) while every other scored sub-task stays consistent (std ≤
``consistency_eps``). Why: when all rollouts score alike the group advantage is zero and GRPO learns
nothing; when several sub-tasks vary at once the scalar reward cannot say which one a rollout got right.

Rules that make the filter find prompts at all:

* rollouts decode under each query's grammar (``qp_core.grammar``), like evaluation and serving: a free
  rollout is invalid about half the time on the tiny model, and an invalid one zeroes Seg, TW and
  Taxonomy together, so almost no prompt would vary on one task only;
* Seg and TW are coupled: TW units sit on Seg's boundaries, so a rollout that moves a boundary moves TW
  too. When Seg varies, TW may vary with it (target ``seg``); TW varying alone is target ``tw``;
* intent (free text, chrF) varies under any sampling and the format reward moves with every sub-task, so
  neither takes part in the rule (and the chain's GRPO weights keep intent out of the advantage).
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
# a task allowed to vary along with the target because it is scored on the target's units
COUPLED = {"seg": ("tw",)}


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

    ``rewards[task]`` holds the G rollout rewards of one prompt (0–1 scale). Tasks coupled to the target
    (``COUPLED``: TW to Seg) are exempt from the consistency check.
    """
    stds = {t: _std(rewards[t]) for t in tasks if t in rewards}
    varying = {t for t, s in stds.items() if s > vary_threshold}
    for lead, followers in COUPLED.items():
        if lead in varying:
            varying -= set(followers)
    if len(varying) != 1:
        return None
    target = next(iter(varying))
    exempt = {target, *COUPLED.get(target, ())}
    if any(s > consistency_eps for t, s in stds.items() if t not in exempt):
        return None
    return target


def outcome(rewards: dict[str, Sequence[float]], *, vary_threshold: float) -> str:
    """Why a prompt was dropped: nothing varies, several (uncoupled) tasks vary, or another task wobbles."""
    varying = {t for t in FILTER_TASKS if t in rewards and _std(rewards[t]) > vary_threshold}
    for lead, followers in COUPLED.items():
        if lead in varying:
            varying -= set(followers)
    return "all_consistent" if not varying else "several_vary" if len(varying) > 1 else "other_inconsistent"


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
    query_grammar: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rollouts + selection; returns (kept rows with ``target``, summary with kept fraction per task)."""
    from qp_core.grammar import query_grammars
    from qp_core.training.data import unified_prompt
    from qp_core.training.generate import generate_texts

    prompts = [unified_prompt(r, rules_mode, context) for r in rows]
    grammars = query_grammars([r["query"] for r in rows]) if query_grammar else None
    rollouts = generate_texts(model_dir, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                              do_sample=True, temperature=temperature, top_p=top_p,
                              num_return_sequences=num_generations, bf16=bf16, seed=seed, grammars=grammars)
    kept, summary = select_prompts(rows, rollouts, vary_threshold=vary_threshold, consistency_eps=consistency_eps)
    summary.update(num_generations=num_generations, query_grammar=query_grammar)
    return kept, summary


def select_prompts(
    rows: list[dict[str, Any]],
    rollouts: list[list[str]],
    *,
    vary_threshold: float,
    consistency_eps: float,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score each row's rollout texts per task and keep the rows ``select_target`` accepts."""
    from qp_core.rewards import per_task_rewards

    kept: list[dict[str, Any]] = []
    reasons = {"kept": 0, "all_consistent": 0, "several_vary": 0, "other_inconsistent": 0}
    per_target: dict[str, int] = {t: 0 for t in FILTER_TASKS}
    n_rollouts = valid = 0
    for row, outs in zip(rows, rollouts):
        label = json.loads(row["label"]) if isinstance(row["label"], str) else row["label"]
        scores = [per_task_rewards(text, label, row["query"]) for text in outs]
        n_rollouts += len(scores)
        valid += sum(sc["format"] == 1.0 for sc in scores)
        rewards = {t: [s[t] for s in scores] for t in FILTER_TASKS}
        target = select_target(rewards, vary_threshold=vary_threshold, consistency_eps=consistency_eps)
        if target is None:
            reasons[outcome(rewards, vary_threshold=vary_threshold)] += 1
            continue
        reasons["kept"] += 1
        per_target[target] += 1
        kept.append({**row, "target": target, "rollout_rewards": rewards})
    n = max(1, len(rows))
    summary = {
        "candidates": len(rows),
        "valid_rollout_fraction": round(valid / max(1, n_rollouts), 4),
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
