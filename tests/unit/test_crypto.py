"""AES-256-GCM sealing, AAD framing and the file/env root key providers (no database)."""

from __future__ import annotations

import base64
import os
import stat
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaivault.config import ConfigurationError, KmsProvider, Settings
from scaivault.crypto import (
    DataKey,
    DecryptionFailed,
    EnvRootKeyProvider,
    LocalRootKeyProvider,
    RootKeyRotationNotSupported,
    generate_key,
    open_sealed,
    root_key_provider,
    seal,
)
from scaivault.crypto.aead import NONCE_SIZE, TAG_SIZE, context
from scaivault.crypto.keyring import new_id

KEY = bytes(range(32))


def test_generate_key_is_32_random_bytes() -> None:
    keys = {generate_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(len(key) == 32 for key in keys)


@given(plaintext=st.binary(max_size=4096), aad=st.binary(max_size=256))
def test_round_trip(plaintext: bytes, aad: bytes) -> None:
    blob = seal(KEY, plaintext, aad)
    assert len(blob) == NONCE_SIZE + len(plaintext) + TAG_SIZE
    assert open_sealed(KEY, blob, aad) == plaintext


@settings(max_examples=200)
@given(plaintext=st.binary(min_size=1, max_size=512), aad=st.binary(max_size=64), data=st.data())
def test_any_flipped_bit_is_refused(plaintext: bytes, aad: bytes, data: st.DataObject) -> None:
    blob = bytearray(seal(KEY, plaintext, aad))
    index = data.draw(st.integers(0, len(blob) - 1))
    blob[index] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(DecryptionFailed):
        open_sealed(KEY, bytes(blob), aad)


@given(plaintext=st.binary(max_size=256), aad=st.binary(max_size=64), other=st.binary(max_size=64))
def test_aad_mismatch_is_refused(plaintext: bytes, aad: bytes, other: bytes) -> None:
    if other == aad:
        other = aad + b"x"
    with pytest.raises(DecryptionFailed):
        open_sealed(KEY, seal(KEY, plaintext, aad), other)


@given(cut=st.integers(0, NONCE_SIZE + TAG_SIZE + 15))
def test_truncated_blob_is_refused(cut: int) -> None:
    blob = seal(KEY, b"0123456789abcdef", b"aad")
    with pytest.raises(DecryptionFailed):
        open_sealed(KEY, blob[:cut], b"aad")


def test_wrong_key_is_refused_and_error_names_no_secret() -> None:
    plaintext = b"hunter2-super-secret"
    blob = seal(KEY, plaintext, b"ctx")
    wrong = generate_key()
    with pytest.raises(DecryptionFailed) as info:
        open_sealed(wrong, blob, b"ctx")
    text = str(info.value) + repr(info.value) + repr(info.value.details)
    for secret in (plaintext, KEY, wrong):
        assert secret.hex() not in text
        assert base64.b64encode(secret).decode() not in text
    assert "hunter2" not in text
    assert info.value.code == "internal_error"


def test_nonces_are_fresh() -> None:
    blobs = {seal(KEY, b"same", b"same") for _ in range(100)}
    assert len(blobs) == 100


def test_only_256_bit_keys() -> None:
    with pytest.raises(ValueError):
        seal(b"k" * 16, b"x", b"")
    with pytest.raises(ValueError):
        open_sealed(b"k" * 31, b"\0" * 40, b"")


@given(parts=st.lists(st.text(max_size=8), max_size=4), others=st.lists(st.text(max_size=8), max_size=4))
def test_context_is_unambiguous(parts: list[str], others: list[str]) -> None:
    assert (context("x", *parts) == context("x", *others)) == (parts == others)


def test_context_separates_labels() -> None:
    assert context("tenant-key", "ptn_a", "tnt_b") != context("data-key", "ptn_a", "tnt_b")
    assert context("k", "ab", "c") != context("k", "a", "bc")


def test_data_key_repr_hides_key() -> None:
    key = generate_key()
    text = repr(DataKey("dk_x", key))
    assert key.hex() not in text and repr(key) not in text


def test_new_id_shape() -> None:
    ids = [new_id("dk_") for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == 29 and i.startswith("dk_") and i[3:].isalnum() and i[3:].islower() for i in ids)


# --- root key providers ---------------------------------------------------------------------------------------


async def test_env_provider_round_trip_and_key_id() -> None:
    import hashlib

    raw = os.urandom(32)
    provider = EnvRootKeyProvider(base64.b64encode(raw).decode())
    assert provider.key_id == "env-" + hashlib.sha256(raw).hexdigest()[:8]
    key_id, blob = await provider.wrap(b"partner key", b"aad")
    assert key_id == provider.key_id
    assert await provider.unwrap(key_id, blob, b"aad") == b"partner key"
    with pytest.raises(DecryptionFailed):
        await provider.unwrap(key_id, blob, b"other")
    with pytest.raises(DecryptionFailed):
        await provider.unwrap("env-00000000", blob, b"aad")
    await provider.check()
    assert raw.hex() not in repr(provider) and base64.b64encode(raw).decode() not in repr(provider)


async def test_env_provider_cannot_rotate() -> None:
    provider = EnvRootKeyProvider(base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(RootKeyRotationNotSupported) as info:
        await provider.rotate()
    assert "KMS" in str(info.value) and "local" in str(info.value)


@pytest.mark.parametrize("value", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_env_provider_rejects_bad_keys(value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        EnvRootKeyProvider(value)
    assert "SCAIVAULT_ROOT_KEY" in str(info.value) and "\n" not in str(info.value)


async def test_local_provider_creates_private_file_and_rotates(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    provider = LocalRootKeyProvider(data_dir)
    first, blob = await provider.wrap(b"payload", b"aad")
    path = data_dir / "root-keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700

    second = await provider.rotate()
    assert second != first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in data_dir.iterdir() if p.name.endswith(".tmp")]
    key_id, blob2 = await provider.wrap(b"payload2", b"aad")
    assert key_id == second

    reopened = LocalRootKeyProvider(data_dir)  # a fresh process reads both versions
    assert await reopened.unwrap(first, blob, b"aad") == b"payload"
    assert await reopened.unwrap(second, blob2, b"aad") == b"payload2"
    with pytest.raises(DecryptionFailed):
        await reopened.unwrap(second, blob, b"aad")  # a blob is bound to the key id that wrapped it
    await reopened.check()


async def test_local_provider_sees_rotation_by_another_process(tmp_path: Path) -> None:
    a, b = LocalRootKeyProvider(tmp_path), LocalRootKeyProvider(tmp_path)
    await a.check()
    await b.check()
    await a.rotate()
    key_id, blob = await a.wrap(b"x", b"")
    assert await b.unwrap(key_id, blob, b"") == b"x"


async def test_local_provider_refuses_a_readable_key_file(tmp_path: Path) -> None:
    provider = LocalRootKeyProvider(tmp_path)
    await provider.check()
    os.chmod(tmp_path / "root-keys.json", 0o644)
    with pytest.raises(ConfigurationError):
        await LocalRootKeyProvider(tmp_path).check()


def test_provider_selection(tmp_path: Path) -> None:
    assert isinstance(root_key_provider(Settings(data_dir=tmp_path)), LocalRootKeyProvider)
    env = root_key_provider(Settings(kms_provider="env", root_key=base64.b64encode(os.urandom(32)).decode()))
    assert isinstance(env, EnvRootKeyProvider)
    for provider, variable in (
        ("env", "SCAIVAULT_ROOT_KEY"),
        ("aws", "KMS_KEY_ID"),
        ("gcp", "KMS_KEY_NAME"),
        ("azure", "KMS_KEY_URL"),
    ):
        with pytest.raises(ConfigurationError) as info:
            root_key_provider(Settings(kms_provider=provider))
        assert variable in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("provider", "key_setting", "sdk_module", "package"),
    [
        ("aws", {"kms_key_id": "alias/scaivault"}, "boto3", "boto3"),
        ("gcp", {"kms_key_name": "projects/p/locations/l/keyRings/r/cryptoKeys/k"}, "google.cloud.kms",
         "google-cloud-kms"),
        ("azure", {"kms_key_url": "https://vault.example/keys/k"}, "azure.keyvault.keys.crypto",
         "azure-keyvault-keys"),
    ],
)
def test_missing_kms_sdk_is_a_one_line_configuration_error(
    monkeypatch: pytest.MonkeyPatch, provider: KmsProvider, key_setting: dict[str, str], sdk_module: str, package: str
) -> None:
    # None in sys.modules makes the import raise ImportError, as if the SDK were not installed (boto3 is, for S3).
    monkeypatch.setitem(sys.modules, sdk_module, None)
    with pytest.raises(ConfigurationError) as info:
        root_key_provider(Settings.model_validate({"kms_provider": provider, **key_setting}))
    assert package in str(info.value) and "\n" not in str(info.value)
