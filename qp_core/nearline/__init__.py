"""The daily nearline steps, one module each, in the DAG's order: ``sample`` → ``context`` → ``prompts``
(Spark) → ``generate`` (engines, per prompt shard) → ``validate`` (parse, fallback, quality gate) →
``publish`` (KV namespace, lake manifest, pointer). ``steps`` is the ordered step list the DAG, ``qp run``
and ``qp backfill`` share; ``settings`` and ``text`` are what the Spark steps share.

The jobs (``jobs/<step>.py``) only parse arguments and call ``run(...)`` here; what is decided per row
(normalisation, malformed checks, tokenisation, prompt building) is plain Python applied through
``mapInArrow`` so that it is the very same code the rest of the system uses, and what is decided per
dataset (dedupe, frequency, selection, history, BM25) is Spark SQL in ``sql/``.
"""
