"""The engine types this server runs, and the backend class each one is built with."""

from __future__ import annotations

import importlib

import pytest

from scaivault.domain.dynamic import NOT_YET_SUPPORTED
from scaivault.dynamic.factory import (
    ENGINE_TYPES,
    SUPPORTED_ENGINE_TYPES,
    UNSUPPORTED_ENGINE_TYPES,
    UnsupportedEngine,
    build_backend,
    unsupported_reason,
)
from scaivault.dynamic.port import EngineTarget

ADAPTERS = {
    "database.postgresql": ("scaivault.dynamic.postgresql", "PostgresBackend"),
    "database.mysql": ("scaivault.dynamic.mysql", "MySqlBackend"),
    "database.redis": ("scaivault.dynamic.redis_acl", "RedisAclBackend"),
    "aws": ("scaivault.dynamic.aws", "AwsBackend"),
    "ssh": ("scaivault.dynamic.ssh", "SshBackend"),
}


def test_the_lists() -> None:
    assert set(SUPPORTED_ENGINE_TYPES) == set(ADAPTERS)
    assert set(UNSUPPORTED_ENGINE_TYPES) == {"database.mongodb", "azure", "gcp", "custom"}
    assert set(ENGINE_TYPES) == set(ADAPTERS) | set(UNSUPPORTED_ENGINE_TYPES)


@pytest.mark.parametrize("engine_type", ["database.mongodb", "azure", "gcp", "custom"])
def test_unsupported_types_are_refused_with_their_message(engine_type: str) -> None:
    with pytest.raises(UnsupportedEngine) as refused:
        build_backend(EngineTarget(engine_type, {}, {}))
    assert str(refused.value) == NOT_YET_SUPPORTED[engine_type]  # the words the API answers with
    assert engine_type.rpartition(".")[2] in str(refused.value)
    assert str(refused.value).endswith("is not yet supported by this server")
    assert unsupported_reason(engine_type) == str(refused.value)
    assert isinstance(refused.value, ValueError)


def test_an_unknown_type_is_refused() -> None:
    with pytest.raises(UnsupportedEngine, match="unknown engine type 'database.oracle'"):
        build_backend(EngineTarget("database.oracle", {}, {}))


@pytest.mark.parametrize("engine_type", sorted(ADAPTERS))
def test_supported_types_map_to_their_backend(engine_type: str) -> None:
    module_name, class_name = ADAPTERS[engine_type]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as missing:
        if missing.name != module_name:
            raise
        pytest.skip(f"{module_name} is not written yet")
    target = EngineTarget(engine_type, {"connection_url": "postgresql://{{username}}:{{password}}@db.example:5432/x"},
                          {"username": "root", "password": "pw", "access_key_id": "AKIA", "secret_access_key": "s"},
                          private_key_pem=None)
    assert unsupported_reason(engine_type) is None
    assert type(build_backend(target)) is getattr(module, class_name)
