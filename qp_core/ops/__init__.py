"""Infrastructure helpers: processes, Spark sessions/submit, the local redis-server, the local Airflow.

Nothing here imports stage code (``qp_core.nearline``, ``qp_core.training``); the stages import these.
"""
