"""Generation engines behind one interface (``GenerationEngine.generate(messages, queries=...) -> list[Generation]``).

``vllm`` (vLLM's offline ``LLM``: structured output, prefix caching) is the main path; ``hf`` (plain
transformers ``generate``) is a fallback behind the same interface for machines where vLLM can't run. Both
hold each row to its query's grammar (``qp_core.grammar``) when given the queries.
Backends are imported lazily by ``make_engine`` (:mod:`qp_core.engines.factory`) so importing this package stays cheap.
"""

from qp_core.engines.base import EngineSettings, Generation, GenerationEngine
from qp_core.engines.factory import engine_settings_for, make_engine

__all__ = ["EngineSettings", "Generation", "GenerationEngine", "engine_settings_for", "make_engine"]
