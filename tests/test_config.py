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


# ---------------------------------------------------------------------------------------------------
# every settings model rejects unknown keys: a typo in a YAML file is an error naming the key


def _loaders():
    from qp_core.kv.settings import load_kv_settings
    from qp_core.legacy.settings import load_legacy_settings
    from qp_core.nearline.settings import load_generation_settings
    from qp_core.nearline.settings import load_sampling_settings
    from qp_core.ops.airflow_settings import settings as load_airflow_settings
    from qp_core.ops.spark import load_spark_settings
    from qp_core.profiles import load_profile
    from qp_core.prompt import load_prompt_settings
    from qp_core.rewards import load_reward_settings
    from qp_core.training.config import load_training_settings
    from qp_core.world.settings import load_world_settings

    return {
        "airflow": load_airflow_settings, "generation": load_generation_settings, "kv": load_kv_settings,
        "legacy": load_legacy_settings, "prompt": load_prompt_settings, "rewards": load_reward_settings,
        "sampling": load_sampling_settings, "spark": load_spark_settings, "world": load_world_settings,
        "profiles/tiny": lambda: load_profile("tiny"), "training": load_training_settings,
    }


@pytest.fixture
def conf_copy(tmp_path, monkeypatch):
    import shutil

    from qp_core.paths import REPO_ROOT

    conf = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)
    monkeypatch.setenv("QP_CONF_DIR", str(conf))
    return conf


@pytest.mark.parametrize("name", sorted(_loaders()))
def test_typo_in_a_settings_file_is_an_error_naming_the_key(conf_copy, name):
    loader = _loaders()[name]
    loader()  # the shipped file loads
    path = conf_copy / f"{name}.yaml"
    if name == "training":  # sections hold the settings; the top level is their container
        text = path.read_text(encoding="utf-8").replace("\ndefaults:\n", "\ndefaults:\n  max_stpes: 5\n", 1)
        assert "max_stpes" in text
        path.write_text(text, encoding="utf-8")
        typo = "max_stpes"
    else:
        typo = "min_vaild_rate"
        path.write_text(path.read_text(encoding="utf-8") + f"\n{typo}: 0.5\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        loader()
    assert typo in str(err.value) and name in str(err.value)


def test_typo_in_a_nested_settings_key_is_an_error_naming_it(conf_copy, monkeypatch):
    from qp_core.nearline.settings import load_generation_settings

    monkeypatch.setenv("QP__GENERATION__VALIDATION", '{"min_vaild_rate": 0.5}')
    with pytest.raises(ConfigError, match="min_vaild_rate"):
        load_generation_settings()


def test_every_pydantic_model_in_qp_core_forbids_unknown_keys():
    import importlib
    import pkgutil

    import qp_core

    for info in pkgutil.walk_packages(qp_core.__path__, "qp_core."):
        if info.name.startswith("qp_core.bench.__main__"):
            continue
        importlib.import_module(info.name)
    seen, stack = [], list(BaseModel.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__.startswith("qp_core."):
            seen.append(cls)
            assert cls.model_config.get("extra") == "forbid", f"{cls.__module__}.{cls.__name__} accepts unknown keys"
    assert len(seen) >= 15
