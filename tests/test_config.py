import pytest
from pydantic import BaseModel

from qp_core.config import ConfigError, load_settings


class Demo(BaseModel):
    url: str = "redis://default"
    batch: int = 10


def test_file_env_and_override_precedence(tmp_path, monkeypatch):
    (tmp_path / "demo.yaml").write_text("url: redis://file\nbatch: 5\n")
    monkeypatch.setenv("QP_CONF_DIR", str(tmp_path))
    assert load_settings("demo", Demo).batch == 5
    monkeypatch.setenv("QP__DEMO__BATCH", "7")
    assert load_settings("demo", Demo).batch == 7
    assert load_settings("demo", Demo, batch=9).batch == 9
    assert load_settings("missing", Demo).url == "redis://default"


def test_invalid_config_names_the_file(tmp_path, monkeypatch):
    (tmp_path / "demo.yaml").write_text("batch: many\n")
    monkeypatch.setenv("QP_CONF_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="conf/demo.yaml"):
        load_settings("demo", Demo)
