"""Intent description: the template of the intent-analysis rules, filled from the other legacy outputs.

``用户想{需求}，属于{主类目}``: the object is the query's words minus intent words and weight-0 words, the
need comes from the first intent word's row of the rules table, the category is the top-1 label. The
table is read from ``conf/rules/50_intent.md`` (so operations staff edit it in one place) with the
shipped table as a fallback when the file's format can't be read.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from qp_core.schema import MAX_INTENT_CHARS

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "用户想{need}，属于{category}"
DEFAULT_NEED = "了解{obj}的相关内容"
DEFAULT_NEEDS = {
    "推荐": "找{obj}的推荐", "测评": "看{obj}的测评", "怎么样": "了解{obj}的口碑", "值不值得": "了解{obj}的口碑",
    "哪个好": "比较{obj}怎么选", "怎么选": "比较{obj}怎么选", "对比": "比较{obj}怎么选",
    "多少钱": "了解{obj}的价格", "价格": "了解{obj}的价格", "攻略": "找{obj}的攻略", "教程": "学{obj}的教程",
    "平替": "找{obj}的平价替代", "避雷": "避开{obj}的雷区", "同款": "找{obj}的同款", "合集": "看{obj}的合集",
}
MAX_OBJECT_CHARS = 30
_ROW = re.compile(r"^\|\s*([^|]+?)\s*\|\s*([^|]*\{对象\}[^|]*?)\s*\|\s*$")


@lru_cache(maxsize=4)
def _parse_rules(text: str) -> tuple[dict[str, str], str, str]:
    needs: dict[str, str] = {}
    default_need = DEFAULT_NEED
    for line in text.splitlines():
        m = _ROW.match(line.strip())
        if m:
            for word in re.split(r"\s*/\s*", m.group(1)):
                if word and "意图词" not in word:
                    needs[word] = m.group(2).replace("{对象}", "{obj}")
    m = re.search(r"没有意图词时用[“\"]([^”\"]*\{对象\}[^”\"]*)[”\"]", text)
    if m:
        default_need = m.group(1).replace("{对象}", "{obj}")
    template = DEFAULT_TEMPLATE
    m = re.search(r"`([^`]*\{需求\}[^`]*\{主类目\}[^`]*)`", text)
    if m:
        template = m.group(1).replace("{需求}", "{need}").replace("{主类目}", "{category}")
    return needs, default_need, template


def intent_rules() -> tuple[dict[str, str], str, str]:
    """(intent word -> need template, default need, sentence template) from the rules, or the defaults."""
    from qp_core.rules import RulesError, rules_dir

    path = rules_dir() / "50_intent.md"
    try:
        needs, default_need, template = _parse_rules(path.read_text(encoding="utf-8"))
    except (OSError, RulesError):
        needs, default_need, template = {}, DEFAULT_NEED, DEFAULT_TEMPLATE
    if len(needs) < 5:
        logger.debug("intent table not readable from %s: using the built-in table", path)
        return dict(DEFAULT_NEEDS), DEFAULT_NEED, DEFAULT_TEMPLATE
    return needs, default_need, template


def describe(segments: list[str], weights: list[int], category: str,
             rules: tuple[dict[str, str], str, str] | None = None) -> str:
    needs, default_need, template = rules or intent_rules()
    need_tpl = None
    obj_parts = []
    for seg, w in zip(segments, weights):
        if seg in needs:
            need_tpl = need_tpl or needs[seg]
            continue
        if w > 0:
            obj_parts.append(seg)
    obj = "".join(obj_parts)[:MAX_OBJECT_CHARS] or "".join(segments)[:MAX_OBJECT_CHARS] or "相关内容"
    try:
        text = template.format(need=(need_tpl or default_need).format(obj=obj), category=category)
    except (KeyError, IndexError, ValueError):  # a brace in edited rules text: keep the shipped template
        text = DEFAULT_TEMPLATE.format(need=DEFAULT_NEED.format(obj=obj), category=category)
    return text[:MAX_INTENT_CHARS]
