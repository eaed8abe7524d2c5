"""Business rules R (paper §4.2): plain Markdown in ``conf/rules/`` that operations staff edit.

Two renderings of the same rules:

* ``full`` — every ``conf/rules/NN_*.md`` file in name order (entity definitions, segmentation, term
  weighting, taxonomy boundaries, intent analysis), for GPU profiles;
* ``compact`` — ``conf/rules/compact.md``, a short digest for the tiny CPU profile, where a long shared
  prefix makes each training step many times dearer (DESIGN §5).

``rules_version()`` hashes the text of every rules file, so it identifies the rules whichever mode a
prompt renders: records carry it together with the mode, and a change to either rendering changes it.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from qp_core.config import ConfigError, conf_path

RULES_MODES = ("full", "compact")
_FULL_GLOB = "[0-9][0-9]_*.md"
_COMPACT_FILE = "compact.md"


class RulesError(ConfigError):
    """The rules files are missing or the mode is unknown; the message says which file or mode."""


def rules_dir() -> Path:
    return conf_path("rules")


def _full_files() -> list[Path]:
    folder = rules_dir()
    files = sorted(folder.glob(_FULL_GLOB)) if folder.is_dir() else []
    if not files:
        raise RulesError(
            f"no business-rules files {folder}/{_FULL_GLOB}: the full rules are the NN_*.md files of conf/rules/"
        )
    return files


@lru_cache(maxsize=16)
def _read(path: str, mtime_ns: int, size: int) -> str:
    """File text, cached per (path, mtime, size): prompts are built per query, rules change rarely."""
    return Path(path).read_text(encoding="utf-8").strip()


def _text(path: Path) -> str:
    st = path.stat()
    return _read(str(path), st.st_mtime_ns, st.st_size)


def load_rules(mode: str = "full") -> str:
    """The rules text rendered into the system prompt for ``mode`` (``full`` or ``compact``)."""
    if mode == "full":
        return "\n\n".join(_text(p) for p in _full_files())
    if mode == "compact":
        path = rules_dir() / _COMPACT_FILE
        if not path.is_file():
            raise RulesError(f"compact rules file not found: {path} (the compact rendering of conf/rules/)")
        return _text(path)
    raise RulesError(f"unknown rules mode {mode!r}; expected one of {RULES_MODES}")


def rules_version() -> str:
    """12-hex sha256 over every rules file (full files, then compact.md when present).

    The same value whatever mode is rendered, so a model trained with compact rules and one trained
    with full rules of the same text share a rules version and differ only in ``rules_mode``.
    """
    h = hashlib.sha256()
    files = _full_files()
    compact_path = rules_dir() / _COMPACT_FILE
    if compact_path.is_file():
        files.append(compact_path)
    for path in files:
        h.update(path.name.encode("utf-8") + b"\0" + _text(path).encode("utf-8") + b"\0")
    return h.hexdigest()[:12]
