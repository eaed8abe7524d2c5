"""Logic of the nearline Spark jobs (``jobs/sample.py``, ``jobs/context.py``, ``jobs/prompts.py``).

The jobs only parse arguments and call ``run(...)`` here; what is decided per row (normalisation, malformed
checks, tokenisation, prompt building) is plain Python applied through ``mapInArrow`` so that it is the very
same code the rest of the system uses, and what is decided per dataset (dedupe, frequency, selection,
history, BM25) is Spark SQL in ``sql/``.
"""
