"""Thin pipeline entrypoints: each parses arguments, opens a Spark session and calls ``qp_core``.

Run one with ``spark-submit jobs/sample.py --dt D`` (see ``qp_core.ops.spark.submit_command``) or
``python -m jobs.sample --dt D``; ``main(argv, spark=None)`` is also what tests call with a shared session.
"""
