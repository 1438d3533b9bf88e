"""A real ACME server for tests: Let's Encrypt's pebble and its pebble-challtestsrv (Debian packages ``pebble``).

``pebble-challtestsrv`` is the DNS server pebble's validation authority asks: every name resolves to 127.0.0.1 and its
management API sets and clears ``_acme-challenge`` TXT records (a stand-in for a DNS provider). pebble listens on
loopback with a TLS certificate made here (``ca_bundle`` trusts it), validates http-01 on ``http_port`` and
tls-alpn-01 on ``tls_port`` of 127.0.0.1 (where a test's responders listen) and issues from a root of its own
(``root_pem``).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"
CHALLTESTSRV = shutil.which("pebble-challtestsrv") or "/usr/bin/pebble-challtestsrv"
START_TIMEOUT_SECONDS = 15.0


def pebble_missing() -> str | None:
    """Why the pebble tests cannot run here, or None."""
    for binary in (PEBBLE, CHALLTESTSRV):
        if not os.access(binary, os.X_OK):
            return f"{Path(binary).name} is not installed (Debian package pebble; `make system-deps`)"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on {port} within {START_TIMEOUT_SECONDS} s")


def listener_certificate(directory: Path) -> tuple[Path, Path, str]:
    """A CA and a certificate for 127.0.0.1 and localhost it signed: (cert file, key file, CA PEM)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ScaiVault test pebble listener CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.DNSName("acme.test"),
                 x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "listener.pem", directory / "listener.key"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path, ca.public_bytes(serialization.Encoding.PEM).decode("ascii")


@dataclass
class Pebble:
    directory_url: str
    ca_bundle: str  # PEM of the CA that signed pebble's listener certificate
    management_url: str
    challtestsrv_url: str
    http_port: int  # where pebble's VA connects for http-01
    tls_port: int  # and for tls-alpn-01
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_bundle)

    def root_pem(self) -> str:
        """The root pebble issues from (new on every start)."""
        with urllib.request.urlopen(f"{self.management_url}/roots/0", context=self._ssl(), timeout=5) as response:
            return str(response.read().decode("ascii"))

    def _challtestsrv(self, path: str, body: dict[str, str]) -> None:
        request = urllib.request.Request(
            f"{self.challtestsrv_url}{path}", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def set_txt(self, fqdn: str, value: str) -> None:
        self._challtestsrv("/set-txt", {"host": fqdn.rstrip(".") + ".", "value": value})

    def clear_txt(self, fqdn: str) -> None:
        self._challtestsrv("/clear-txt", {"host": fqdn.rstrip(".") + "."})

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def start_pebble(
    directory: Path, *, eab_keys: dict[str, str] | None = None, dns_server: str | None = None
) -> Pebble:
    """pebble-challtestsrv and pebble on free loopback ports; ``eab_keys`` (kid -> base64url HMAC key) makes
    pebble register accounts only with an external account binding; ``dns_server`` (HOST:PORT, e.g. a PowerDNS)
    is the DNS server pebble's validation authority asks instead of challtestsrv. ``stop()`` the result."""
    dns_port, challtest_port = free_port(), free_port()
    listen_port, management_port = free_port(), free_port()
    http_port, tls_port = free_port(), free_port()
    cert_path, key_path, ca_pem = listener_certificate(directory)
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{listen_port}",
            "managementListenAddress": f"127.0.0.1:{management_port}",
            "certificate": str(cert_path),
            "privateKey": str(key_path),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": bool(eab_keys),
            **({"externalAccountMACKeys": eab_keys} if eab_keys else {}),
        }
    }
    config_path = directory / "pebble-config.json"
    config_path.write_text(json.dumps(config))
    logs = directory / "logs"
    logs.mkdir(exist_ok=True)
    pebble = Pebble(
        directory_url=f"https://127.0.0.1:{listen_port}/dir",
        ca_bundle=ca_pem,
        management_url=f"https://127.0.0.1:{management_port}",
        challtestsrv_url=f"http://127.0.0.1:{challtest_port}",
        http_port=http_port,
        tls_port=tls_port,
    )
    try:
        with (logs / "challtestsrv.log").open("wb") as log:
            challtestsrv = subprocess.Popen(
                [
                    CHALLTESTSRV,
                    "-dns01", f"127.0.0.1:{dns_port}", "-management", f"127.0.0.1:{challtest_port}",
                    "-http01", "", "-https01", "", "-tlsalpn01", "",
                    "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                ],
                stdout=log, stderr=subprocess.STDOUT,
            )
        pebble.processes.append(challtestsrv)
        _wait_for_port(challtest_port, challtestsrv, "pebble-challtestsrv")
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PEBBLE_VA_NOSLEEP": "1",  # validate at once instead of after a random pause
            "PEBBLE_WFE_NONCEREJECT": "0",  # no random badNonce answers
            "PEBBLE_AUTHZREUSE": "0",  # every order gets fresh authorizations to validate
        }
        with (logs / "pebble.log").open("wb") as log:
            server = subprocess.Popen(
                [PEBBLE, "-config", str(config_path), "-dnsserver", dns_server or f"127.0.0.1:{dns_port}"],
                stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=directory,
            )
        pebble.processes.append(server)
        _wait_for_port(listen_port, server, "pebble")
        _wait_for_port(management_port, server, "pebble")
    except BaseException:
        pebble.stop()
        raise
    return pebble
