"""Root key providers: the top of the key hierarchy. A provider wraps and unwraps partner keys (and the built-in
token issuer's signing key); with a KMS the root key never leaves the KMS.

Pick one with :func:`root_key_provider` from ``KMS_PROVIDER``: ``local`` (a key file in the data directory, the
default), ``env`` (``SCAIVAULT_ROOT_KEY``), ``aws``, ``gcp`` or ``azure``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import stat
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from scaivault.config import ConfigurationError, Settings
from scaivault.crypto.aead import KEY_SIZE, DecryptionFailed, context, generate_key, open_sealed, seal
from scaivault.domain.errors import InvalidRequest, ServiceUnavailable

T = TypeVar("T")

_HEALTH_AAD = context("root-key-health-check")


class UnknownRootKey(DecryptionFailed):
    default_message = "The root key that wrapped this key is not available from the configured provider"


class RootKeyRotationNotSupported(InvalidRequest):
    default_message = (
        "The env root key provider (SCAIVAULT_ROOT_KEY) cannot rotate its key; "
        "use KMS_PROVIDER=local or a KMS provider (aws, gcp, azure) to rotate the root key"
    )


class RootKeyProvider(ABC):
    """Wraps small secrets (keys) under a root key that ScaiVault ideally never sees."""

    name: str

    @abstractmethod
    async def wrap(self, plaintext: bytes, aad: bytes) -> tuple[str, bytes]:
        """Encrypt under the active root key; return (the key id used, the blob)."""

    @abstractmethod
    async def unwrap(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        """Decrypt a blob made by :meth:`wrap`; raise DecryptionFailed if it does not open."""

    @abstractmethod
    async def rotate(self) -> str:
        """Make a new active root key and return its id; blobs wrapped by older keys still unwrap."""

    async def check(self) -> None:
        """Health: a wrap/unwrap round trip; raises on failure."""
        probe = generate_key()
        key_id, blob = await self.wrap(probe, _HEALTH_AAD)
        if not hmac.compare_digest(await self.unwrap(key_id, blob, _HEALTH_AAD), probe):
            raise DecryptionFailed("The root key provider failed its round-trip check")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _key_id(prefix: str, key: bytes) -> str:
    """A public fingerprint of a root key: SHA-256 reveals nothing usable about a random 256-bit key."""
    return f"{prefix}-{hashlib.sha256(key).hexdigest()[:8]}"


def _bound(key_id: str, aad: bytes) -> bytes:
    """For keys we hold ourselves, bind each blob to the root key id as well as the caller's AAD."""
    return context("root-wrap", key_id, aad)


# --- local key file ---------------------------------------------------------------------------------------------


class LocalRootKeyProvider(RootKeyProvider):
    """Root keys in ``<data_dir>/root-keys.json`` (mode 0600, directory 0700), for single-node and development use.

    File: ``{"format": 1, "active": "<key id>", "keys": {"<key id>": "<base64 key>", ...}}``. Rotation adds a key
    and makes it active; older keys stay for unwrapping. Writes go to a temporary file renamed into place, under an
    exclusive lock, so another process never sees half a file.
    """

    name = "local"
    FILE_NAME = "root-keys.json"

    def __init__(self, data_dir: Path | str) -> None:
        self._dir = Path(data_dir)
        self._path = self._dir / self.FILE_NAME
        self._active: str | None = None
        self._keys: dict[str, bytes] = {}
        self._lock = asyncio.Lock()

    @property
    def path(self) -> Path:
        return self._path

    async def wrap(self, plaintext: bytes, aad: bytes) -> tuple[str, bytes]:
        await self._ensure_loaded()
        assert self._active is not None
        key_id = self._active
        return key_id, seal(self._keys[key_id], plaintext, _bound(key_id, aad))

    async def unwrap(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        await self._ensure_loaded()
        if key_id not in self._keys:  # another process may have rotated since we read the file
            async with self._lock:
                await asyncio.to_thread(self._load_or_create)
        key = self._keys.get(key_id)
        if key is None:
            raise UnknownRootKey()
        return open_sealed(key, blob, _bound(key_id, aad))

    async def rotate(self) -> str:
        async with self._lock:
            return await asyncio.to_thread(self._rotate)

    async def _ensure_loaded(self) -> None:
        if self._active is None:
            async with self._lock:
                if self._active is None:
                    await asyncio.to_thread(self._load_or_create)

    # Blocking file work, run in a thread.

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self._dir / (self.FILE_NAME + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _load_or_create(self) -> None:
        with self._file_lock():
            if self._path.exists():
                self._read()
            else:
                key = generate_key()
                key_id = _key_id("local", key)
                self._write(key_id, {key_id: key})
                self._active, self._keys = key_id, {key_id: key}

    def _rotate(self) -> str:
        with self._file_lock():
            if self._path.exists():
                self._read()
            key = generate_key()
            key_id = _key_id("local", key)
            keys = {**self._keys, key_id: key}
            self._write(key_id, keys)
            self._active, self._keys = key_id, keys
            return key_id

    def _read(self) -> None:
        fd = os.open(self._path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode) or mode & 0o077:
                raise ConfigurationError(
                    f"invalid configuration: {self._path} must be a regular file readable only by its owner (chmod 600)"
                )
            with os.fdopen(fd, "rb") as file:
                fd = -1
                data = json.loads(file.read())
            keys = {key_id: base64.b64decode(value, validate=True) for key_id, value in data["keys"].items()}
            active = data["active"]
            if active not in keys or any(len(key) != KEY_SIZE for key in keys.values()):
                raise ValueError("bad key")
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ConfigurationError(f"invalid configuration: {self._path} is not a valid root key file") from None
        finally:
            if fd >= 0:
                os.close(fd)
        self._active, self._keys = active, keys

    def _write(self, active: str, keys: dict[str, bytes]) -> None:
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self._dir, 0o700)
        body = json.dumps(
            {"format": 1, "active": active, "keys": {k: base64.b64encode(v).decode() for k, v in keys.items()}},
            indent=2,
        ).encode()
        tmp = self._dir / f".{self.FILE_NAME}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._path)
        dir_fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# --- key from the environment -----------------------------------------------------------------------------------


class EnvRootKeyProvider(RootKeyProvider):
    """One root key from ``SCAIVAULT_ROOT_KEY`` (base64 of 32 bytes). It cannot rotate."""

    name = "env"

    def __init__(self, value: str) -> None:
        try:
            key = base64.b64decode((value or "").strip(), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_SIZE:
            raise ConfigurationError(
                "invalid configuration: SCAIVAULT_ROOT_KEY: expected the base64 of 32 random bytes"
            )
        self._key = key
        self.key_id = _key_id("env", key)

    async def wrap(self, plaintext: bytes, aad: bytes) -> tuple[str, bytes]:
        return self.key_id, seal(self._key, plaintext, _bound(self.key_id, aad))

    async def unwrap(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        if not hmac.compare_digest(key_id.encode(), self.key_id.encode()):
            raise UnknownRootKey()
        return open_sealed(self._key, blob, _bound(key_id, aad))

    async def rotate(self) -> str:
        raise RootKeyRotationNotSupported()


# --- cloud KMS (not testable here: written against each vendor SDK's documented API) -----------------------------


def _sdk(import_: Callable[[], T], provider: str, package: str) -> T:
    try:
        return import_()
    except ImportError:
        raise ConfigurationError(
            f"invalid configuration: KMS_PROVIDER={provider} needs the {package} package (pip install {package})"
        ) from None


class KmsRootKeyProvider(RootKeyProvider):
    """A root key held in a cloud KMS. SDK calls are blocking, so they run in a worker thread; any SDK failure
    becomes ServiceUnavailable (503) without the SDK's message, which could echo request fields."""

    def __init__(self, key_ref: str) -> None:
        self.key_ref = key_ref

    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except DecryptionFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - any SDK failure is a 503, without the SDK's message
            raise ServiceUnavailable(f"The {self.name} root key service failed ({type(exc).__name__})") from None


class AwsKmsRootKeyProvider(KmsRootKeyProvider):
    """AWS KMS symmetric key (``KMS_KEY_ID``: key id, ARN or alias). The AAD travels as the EncryptionContext."""

    name = "aws"

    def __init__(self, key_id: str) -> None:
        super().__init__(key_id)
        boto3 = _sdk(lambda: __import__("boto3"), "aws", "boto3")
        self._kms = boto3.client("kms")

    @staticmethod
    def _context(aad: bytes) -> dict[str, str]:
        return {"scaivault:aad": base64.b64encode(aad).decode()}

    async def wrap(self, plaintext: bytes, aad: bytes) -> tuple[str, bytes]:
        response = await self._call(
            self._kms.encrypt, KeyId=self.key_ref, Plaintext=plaintext, EncryptionContext=self._context(aad)
        )
        return response["KeyId"], response["CiphertextBlob"]

    async def unwrap(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        def decrypt() -> bytes:
            try:
                return self._kms.decrypt(CiphertextBlob=blob, KeyId=key_id, EncryptionContext=self._context(aad))[
                    "Plaintext"
                ]
            except self._kms.exceptions.InvalidCiphertextException:
                raise DecryptionFailed() from None

        return await self._call(decrypt)

    async def rotate(self) -> str:
        # New key material under the same key; AWS keeps the old material for decrypting older blobs.
        response = await self._call(self._kms.rotate_key_on_demand, KeyId=self.key_ref)
        return response["KeyId"]


class GcpKmsRootKeyProvider(KmsRootKeyProvider):
    """Google Cloud KMS symmetric key (``KMS_KEY_NAME``: projects/…/locations/…/keyRings/…/cryptoKeys/…)."""

    name = "gcp"

    def __init__(self, key_name: str) -> None:
        super().__init__(key_name)
        kms = _sdk(lambda: __import__("google.cloud.kms", fromlist=["kms"]), "gcp", "google-cloud-kms")
        self._client = kms.KeyManagementServiceClient()

    async def wrap(self, plaintext: bytes, aad: bytes) -> tuple[str, bytes]:
        response = await self._call(
            self._client.encrypt,
            request={"name": self.key_ref, "plaintext": plaintext, "additional_authenticated_data": aad},
        )
        return response.name, bytes(response.ciphertext)  # name: the CryptoKeyVersion used

    async def unwrap(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        def decrypt() -> bytes:
            from google.api_core import exceptions

            try:
                # The ciphertext names its key version; decrypt takes the CryptoKey.
                request = {"name": self.key_ref, "ciphertext": blob, "additional_authenticated_data": aad}
                return bytes(self._client.decrypt(request=request).plaintext)
            except exceptions.InvalidArgument:
                raise DecryptionFailed() from None

        return await self._call(decrypt)

    async def rotate(self) -> str:
        def rotate() -> str:
            version = self._client.create_crypto_key_version(request={"parent": self.key_ref, "crypto_key_version": {}})
            self._client.update_crypto_key_primary_version(
                request={"name": self.key_ref, "crypto_key_version_id": version.name.rsplit("/", 1)[-1]}
            )
            return version.name

        return await self._call(rotate)


class AzureKeyVaultRootKeyProvider(KmsRootKeyProvider):
    """Azure Key Vault RSA key (``KMS_KEY_URL``: https://<vault>.vault.azure.net/keys/<name>[/<version>]).

    Key Vault's wrap_key (RSA-OAEP-256) takes no AAD, so each blob is an envelope: a one-off AES-256-GCM key seals
    the plaintext with the AAD, and Key Vault wraps that key. Blob: ``len(wrapped) (2 bytes) || wrapped || sealed``.
    """

    name = "azure"

    def __init__(self, key_url: str) -> None:
        super().__init__(key_url)
        self._crypto = _sdk(
            lambda: __import__("azure.keyvault.keys.crypto", fromlist=["crypto"]), "azure", "azure-keyvault-keys"
        )
        identity = _sdk(lambda: __import__("azure.identity", fromlist=["identity"]), "azure", "azure-identity")
        self._credential = identity.DefaultAzureCredential()
        self._clients: dict[str, Any] = {}

    def _client(self, key_id: str) -> Any:
        if key_id not in self._clients:
            self._clients[key_id] = self._crypto.CryptographyClient(key_id, self._credential)
        return self._clients[key_id]

    async def wrap(self, plaintext: bytes, aad: bytes) -> tuple[str, bytes]:
        envelope_key = generate_key()
        result = await self._call(
            self._client(self.key_ref).wrap_key, self._crypto.KeyWrapAlgorithm.rsa_oaep_256, envelope_key
        )
        wrapped = bytes(result.encrypted_key)
        return result.key_id, struct.pack(">H", len(wrapped)) + wrapped + seal(envelope_key, plaintext, aad)

    async def unwrap(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        if len(blob) < 2 or len(blob) < 2 + struct.unpack(">H", blob[:2])[0]:
            raise DecryptionFailed()
        size = struct.unpack(">H", blob[:2])[0]
        result = await self._call(
            self._client(key_id).unwrap_key, self._crypto.KeyWrapAlgorithm.rsa_oaep_256, blob[2 : 2 + size]
        )
        return open_sealed(bytes(result.key), blob[2 + size :], aad)

    async def rotate(self) -> str:
        keys = _sdk(lambda: __import__("azure.keyvault.keys", fromlist=["keys"]), "azure", "azure-keyvault-keys")
        vault_url, _, rest = self.key_ref.partition("/keys/")
        name = rest.split("/", 1)[0]
        key = await self._call(keys.KeyClient(vault_url, self._credential).rotate_key, name)
        return key.id


def root_key_provider(settings: Settings) -> RootKeyProvider:
    """The provider named by ``KMS_PROVIDER``, with the setting it needs checked."""
    provider = settings.kms_provider

    def required(value: str | None, variable: str) -> str:
        if not value:
            raise ConfigurationError(f"invalid configuration: {variable} is required when KMS_PROVIDER={provider}")
        return value

    if provider == "local":
        return LocalRootKeyProvider(settings.data_dir)
    if provider == "env":
        return EnvRootKeyProvider(required(settings.root_key, "SCAIVAULT_ROOT_KEY"))
    if provider == "aws":
        return AwsKmsRootKeyProvider(required(settings.kms_key_id, "KMS_KEY_ID"))
    if provider == "gcp":
        return GcpKmsRootKeyProvider(required(settings.kms_key_name, "KMS_KEY_NAME"))
    if provider == "azure":
        return AzureKeyVaultRootKeyProvider(required(settings.kms_key_url, "KMS_KEY_URL"))
    raise ConfigurationError(f"invalid configuration: KMS_PROVIDER: unknown provider {provider!r}")
