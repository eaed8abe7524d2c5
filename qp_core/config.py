"""Configuration: YAML files in ``conf/`` (``QP_CONF_DIR`` overrides the folder).

Each module owns one file and validates it with its own pydantic model (typed config per
component, as Feast does per backend), so operations staff edit YAML, never code:

    class KVSettings(BaseModel): ...
    settings = load_settings("kv", KVSettings)

Environment variables ``QP__<FILE>__<KEY>=value`` override top-level keys of a file
(e.g. ``QP__KV__URL=redis://...``), which is how Airflow workers and tests inject values.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict

from qp_core.paths import conf_dir

M = TypeVar("M", bound=BaseModel)


class ConfigError(RuntimeError):
    """A configuration file is missing or invalid; the message names the file and the field."""


class Settings(BaseModel):
    """Base of every settings model: an unknown key is an error naming it, never silently ignored.

    Why: a typo in a YAML key (``min_vaild_rate``) would otherwise leave the default in force while the
    operator believes the value changed.
    """

    model_config = ConfigDict(extra="forbid")


@lru_cache(maxsize=64)
def _read_yaml(path: str, mtime: float) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def load_conf(name: str, *, required: bool = True) -> dict[str, Any]:
    """Raw mapping of ``conf/<name>.yaml`` with ``QP__<NAME>__<KEY>`` env overrides applied."""
    path = conf_dir() / f"{name}.yaml"
    if not path.exists():
        if required:
            raise ConfigError(f"config file not found: {path}")
        data: dict[str, Any] = {}
    else:
        data = dict(_read_yaml(str(path), path.stat().st_mtime))
    prefix = f"QP__{name.upper().replace('/', '_')}__"
    for key, value in os.environ.items():
        if key.startswith(prefix):
            data[key[len(prefix):].lower()] = yaml.safe_load(value)
    return data


def load_settings(name: str, model: type[M], **overrides: Any) -> M:
    """Validated settings of ``conf/<name>.yaml``; ``overrides`` win over file and env."""
    data = load_conf(name, required=False)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return model.model_validate(data)
    except Exception as exc:  # pydantic.ValidationError -> one clear message naming the file
        raise ConfigError(f"invalid config conf/{name}.yaml: {exc}") from exc


def conf_path(*parts: str) -> Path:
    return conf_dir().joinpath(*parts)
