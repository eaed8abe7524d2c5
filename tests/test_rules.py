"""Business rules loading and versioning (qp_core.rules), against a private copy of conf/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from qp_core import rules
from qp_core.paths import conf_dir


@pytest.fixture
def conf_copy(tmp_path, monkeypatch) -> Path:
    """A copy of conf/ with known rules files, so the tests control the text they hash."""
    dst = tmp_path / "conf"
    shutil.copytree(conf_dir(), dst)
    rdir = dst / "rules"
    shutil.rmtree(rdir, ignore_errors=True)
    rdir.mkdir()
    (rdir / "20_segmentation.md").write_text("# 切分\n品牌名不拆开。\n", encoding="utf-8")
    (rdir / "10_entities.md").write_text("# 实体\n品牌包括别名。\n", encoding="utf-8")
    (rdir / "README.txt").write_text("not a rules file", encoding="utf-8")
    (rdir / "compact.md").write_text("品牌不拆;权重0-3", encoding="utf-8")
    monkeypatch.setenv("QP_CONF_DIR", str(dst))
    return rdir


def test_full_rules_are_numbered_files_in_order(conf_copy):
    text = rules.load_rules("full")
    assert text.index("# 实体") < text.index("# 切分")
    assert "not a rules file" not in text
    assert "品牌不拆;权重0-3" not in text


def test_compact_rules_are_the_compact_file(conf_copy):
    assert rules.load_rules("compact") == "品牌不拆;权重0-3"


def test_unknown_mode_is_a_clear_error(conf_copy):
    with pytest.raises(rules.RulesError, match="unknown rules mode"):
        rules.load_rules("medium")


def test_missing_files_are_clear_errors(conf_copy):
    (conf_copy / "compact.md").unlink()
    with pytest.raises(rules.RulesError, match="compact.md"):
        rules.load_rules("compact")
    for p in conf_copy.glob("*.md"):
        p.unlink()
    with pytest.raises(rules.RulesError, match="NN_"):
        rules.load_rules("full")
    with pytest.raises(rules.RulesError):
        rules.rules_version()


def test_version_is_stable_and_tracks_every_rules_file(conf_copy):
    v1 = rules.rules_version()
    assert v1 == rules.rules_version() and len(v1) == 12
    (conf_copy / "README.txt").write_text("changed", encoding="utf-8")
    assert rules.rules_version() == v1  # not a rules file
    path = conf_copy / "20_segmentation.md"
    path.write_text(path.read_text(encoding="utf-8") + "俚语整体保留。\n", encoding="utf-8")
    v2 = rules.rules_version()
    assert v2 != v1
    (conf_copy / "compact.md").write_text("品牌不拆;权重0-3;俚语整体", encoding="utf-8")
    assert rules.rules_version() != v2


def test_real_rules_render_when_present():
    """The shipped conf/rules (written with the synthetic world) load in both modes."""
    if not list((conf_dir() / "rules").glob("[0-9][0-9]_*.md")):
        pytest.skip("conf/rules not written yet")
    full, compact = rules.load_rules("full"), rules.load_rules("compact")
    assert len(compact) < len(full)
