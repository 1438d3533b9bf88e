"""Configuration: every variable read once; every invalid value stops start-up with one line naming it."""

import pytest

from scaivault.config import ConfigurationError, Settings


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.bind_address == "0.0.0.0:8443" and settings.kms_provider == "local"
    assert settings.public_url == "http://127.0.0.1:8443"
    assert settings.builtin_issuer == "http://127.0.0.1:8443/issuer"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"BIND_ADDRESS": "nonsense"}, "BIND_ADDRESS"),
        ({"BIND_ADDRESS": "off"}, "BIND_ADDRESS"),
        ({"METRICS_BIND_ADDRESS": "host:99999"}, "METRICS_BIND_ADDRESS"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"KMS_PROVIDER": "hsm"}, "KMS_PROVIDER"),
        ({"SCAIVAULT_DELETE_RETENTION": "thirty days"}, "SCAIVAULT_DELETE_RETENTION"),
        ({"SCAIVAULT_DB_POOL_SIZE": "1"}, "SCAIVAULT_DB_POOL_SIZE"),
        ({"TLS_CERT_FILE": "/x.pem"}, "TLS_KEY_FILE"),
        ({"SCAIKEY_JWKS_URL": "https://k.example/jwks"}, "SCAIKEY_URL"),
        ({"SCAIKEY_ISSUER": "https://k.example"}, "SCAIKEY_JWKS_URL"),
    ],
)
def test_invalid_values_fail_with_one_line_naming_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env(environ)
    message = str(raised.value)
    assert named in message and "\n" not in message


def test_tls_makes_the_public_url_https_and_base_url_wins() -> None:
    assert Settings.from_env({"TLS_CERT_FILE": "/c", "TLS_KEY_FILE": "/k"}).public_url.startswith("https://")
    assert Settings.from_env({"BASE_URL": "https://vault.example"}).builtin_issuer == "https://vault.example/issuer"


def test_the_root_key_is_not_in_the_repr() -> None:
    assert "c2VjcmV0" not in repr(Settings.from_env({"SCAIVAULT_ROOT_KEY": "c2VjcmV0", "KMS_PROVIDER": "env"}))


def test_no_credential_is_in_the_repr() -> None:
    settings = Settings.from_env({
        "DATABASE_URL": "postgresql://vault:db-pass-1@db/vault", "REDIS_URL": "redis://:redis-pass-2@cache:6379/0",
        "SCAIKEY_URL": "https://scaikey.example", "SCAIKEY_CLIENT_ID": "vault",
        "SCAIKEY_CLIENT_SECRET": "client-pass-3", "SCAIKEY_WEBHOOK_SECRET": "hook-pass-4-long-enough",
    })
    for secret in ("db-pass-1", "redis-pass-2", "client-pass-3", "hook-pass-4"):
        assert secret not in repr(settings) and secret not in str(settings)


def test_workers_default_to_unset_and_are_read_from_scaivault_workers() -> None:
    assert Settings.from_env({}).workers is None  # `serve` then runs one per usable core
    assert Settings.from_env({"SCAIVAULT_WORKERS": "4"}).workers == 4
    for invalid in ("0", "many", "-1"):
        with pytest.raises(ConfigurationError, match="SCAIVAULT_WORKERS"):
            Settings.from_env({"SCAIVAULT_WORKERS": invalid})


def test_an_unset_pool_size_is_shared_by_the_workers_and_a_set_one_is_per_process() -> None:
    default = Settings.from_env({})
    assert [default.pool_size(n) for n in (1, 2, 4, 16)] == [20, 10, 5, 5]
    assert Settings.from_env({"SCAIVAULT_DB_POOL_SIZE": "30"}).pool_size(4) == 30


def test_quotas_have_sane_defaults_and_bounds() -> None:
    settings = Settings.from_env({})
    assert (settings.max_webhooks_per_tenant, settings.max_subscriptions_per_identity,
            settings.max_subscriptions_per_tenant) == (100, 100, 1000)
    assert Settings.from_env({"SCAIVAULT_MAX_WEBHOOKS_PER_TENANT": "5", "SCAIVAULT_MAX_SUBSCRIPTIONS_PER_IDENTITY": "7",
                              "SCAIVAULT_MAX_SUBSCRIPTIONS_PER_TENANT": "9"}).model_dump(
        include={"max_webhooks_per_tenant", "max_subscriptions_per_identity", "max_subscriptions_per_tenant"}
    ) == {"max_webhooks_per_tenant": 5, "max_subscriptions_per_identity": 7, "max_subscriptions_per_tenant": 9}
    for variable in ("SCAIVAULT_MAX_WEBHOOKS_PER_TENANT", "SCAIVAULT_MAX_SUBSCRIPTIONS_PER_IDENTITY",
                     "SCAIVAULT_MAX_SUBSCRIPTIONS_PER_TENANT"):
        for invalid in ("0", "-1", "many", "1000000"):
            with pytest.raises(ConfigurationError, match=variable):
                Settings.from_env({variable: invalid})
