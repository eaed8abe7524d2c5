"""Recipe probe: one SFT run from a chain's base model, then greedy evaluation on the dev split.

Why: the tiny profile's recipe (steps, learning rate, threads, λ, prompt layout) is tuned by comparing
short runs on the same data, seed and dev rows; the chain is too long a loop for that. Probes train on the
chain's training rows (annotations minus golden minus dev) and read the reserved dev split
(``data.split_dev``), never golden: the report's golden numbers stay untouched by tuning. Each probe
appends one JSON line (settings, loss every 25 steps, metrics and served metrics) to ``--log``.

    QP_HOME=var python -m qp_core.training.probe --base var/training/runs/<run>/base/model --steps 800
    ... --query-first        # the paper's order q ⊕ C instead of conf/prompt.yaml's query_last

The lake needs ``raw/annotations``, ``raw/golden`` and, for λ > 0, ``training/aux`` (``qp train stage aux``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="model dir to start from (a chain's base/model)")
    p.add_argument("--out", default="", help="output dir (default: <base>/../../probes/<name>)")
    p.add_argument("--name", default="")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--lambda-aux", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval", type=int, default=0, help="dev rows (seeded subset; 0 = the whole dev split)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--query-first", action="store_true")
    p.add_argument("--log", default="probes.jsonl")
    a = p.parse_args(argv)
    if a.query_first:
        from qp_core.prompt import load_prompt_settings

        compact = load_prompt_settings().compact.model_copy(update={"query_last": False})
        os.environ["QP__PROMPT__COMPACT"] = compact.model_dump_json()

    from qp_core.legacy import load_or_train
    from qp_core.training.config import SFTStageSettings, load_training_settings
    from qp_core.training.data import annotation_splits, aux_examples_by_task, mix_aux, unified_example
    from qp_core.training.evaluate import evaluate_model
    from qp_core.training.sft import train_sft

    name = a.name or f"s{a.steps}-lr{a.lr:g}-t{a.threads}-lam{a.lambda_aux:g}" + ("-qfirst" if a.query_first else "")
    out = Path(a.out) if a.out else Path(a.base).resolve().parents[1] / "probes" / name
    train, dev = annotation_splits(load_training_settings().eval.dev_fraction)
    if a.eval and a.eval < len(dev):
        import random

        dev = random.Random(a.seed).sample(dev, a.eval)
    unified = [unified_example(r, "compact") for r in train]
    examples = mix_aux(unified, aux_examples_by_task() if a.lambda_aux > 0 else {}, a.lambda_aux, seed=a.seed)
    st = SFTStageSettings(max_steps=a.steps, batch_size=a.batch_size, learning_rate=a.lr, warmup_ratio=0.03,
                          save_steps=max(a.steps, 1), logging_steps=25)
    t0 = time.time()
    res = train_sft(a.base, examples, out, st, seed=a.seed, threads=a.threads)
    train_s = time.time() - t0
    metrics = evaluate_model(res.model_dir, dev, rules_mode="compact",
                             free_valid_rate=True, samples_path=out / "samples.jsonl", fallback=load_or_train())
    metrics.pop("per_row", None)
    metrics.get("served", {}).pop("per_row", None)
    line = {"name": name, "args": vars(a), "split": "dev", "train_s": round(train_s), "examples": len(examples),
            "loss": [(h["step"], round(h["loss"], 4)) for h in res.log_history if "loss" in h], **metrics}
    with open(a.log, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    keys = ("overall", "ner_f1", "seg_f1", "tw_f1", "taxonomy", "valid_rate")
    print(json.dumps({"name": name, "train_s": round(train_s), **{k: metrics[k] for k in keys},
                      "served_overall": metrics["served"]["overall"]}))
    return line


if __name__ == "__main__":
    main()
