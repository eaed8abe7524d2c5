"""QP-OneModel: nearline query processing with one generative model.

The library behind the Airflow DAGs and Spark jobs. Importing it has no side effects:
no directories are created, no servers started, no heavy frameworks imported.
"""

__version__ = "0.1.0"
