"""The training chain (paper Figure 1 / §4.3) and what it is built from.

Orchestration: ``run`` (a run's folder and bookkeeping), ``stages`` (the eight stages, ``run_stage``,
``run_chain``), ``report`` (tables, plots, the notes under them), ``ablation`` (Table 2), ``callbacks``
(trainer progress), ``steps`` (the chain as Airflow tasks). Building blocks: ``config`` (conf/training.yaml),
``modeling`` (our tokenizer, the tiny model), ``base``, ``data``, ``aux``, ``sft``, ``grpo_filter``, ``grpo``,
``generate``, ``evaluate``, ``gguf_tokenizer``; ``probe`` is a recipe-tuning tool.
"""
