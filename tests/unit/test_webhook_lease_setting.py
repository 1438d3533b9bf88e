"""SCAIVAULT_WEBHOOK_LEASE: how long a claimed delivery is kept from other dispatchers (docs/webhooks.md), always
longer than a try may take, so a send still under way is never claimed and sent again."""

from __future__ import annotations

import pytest

from scaivault.config import ConfigurationError, Settings


def test_the_lease_defaults_to_a_minute_or_outlasts_a_long_timeout() -> None:
    assert Settings.from_env({}).webhook_lease == 60.0
    assert Settings.from_env({"SCAIVAULT_WEBHOOK_TIMEOUT": "90"}).webhook_lease == 100.0
    assert Settings.from_env({"SCAIVAULT_WEBHOOK_TIMEOUT": "2", "SCAIVAULT_WEBHOOK_LEASE": "3"}).webhook_lease == 3.0


@pytest.mark.parametrize("environ", [
    {"SCAIVAULT_WEBHOOK_LEASE": "10"},  # not longer than the default timeout (10 s)
    {"SCAIVAULT_WEBHOOK_TIMEOUT": "5", "SCAIVAULT_WEBHOOK_LEASE": "4"},
    {"SCAIVAULT_WEBHOOK_LEASE": "0"},
    {"SCAIVAULT_WEBHOOK_LEASE": "soon"},
])
def test_a_lease_a_send_could_outlast_is_refused(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match="SCAIVAULT_WEBHOOK_LEASE"):
        Settings.from_env(environ)
