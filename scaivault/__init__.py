"""ScaiVault server: an event-sourced secrets and certificate store."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scaivault")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
