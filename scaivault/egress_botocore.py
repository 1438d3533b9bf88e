"""botocore clients (the S3 audit-export destination) that send every request to a checked address
(``scaivault.egress.pin_url``) without resolving the endpoint's name again.

``pin_client(client, target)`` registers a sender on the client's documented ``before-send`` event: a handler that
returns a response replaces botocore's own HTTP send. The sender opens connections to the pinned address only, keeps
the ``Host`` header botocore signed (SigV4 still verifies), sends the endpoint's host name as the TLS server name and
verifies the certificate against it, follows no redirect (botocore's own sender follows none either) and refuses a
request for any other scheme, host or port: a virtual-hosted bucket name, or an endpoint botocore's S3 region
redirector picked. Use path-style addressing. Proxies configured for botocore are not used.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

from botocore.awsrequest import (
    AWSHTTPConnectionPool,
    AWSHTTPSConnectionPool,
    AWSPreparedRequest,
    AWSResponse,
    HeadersDict,
)
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
    SSLError,
)
from botocore.httpsession import get_cert_path
from urllib3 import HTTPConnectionPool, Timeout
from urllib3.exceptions import ConnectTimeoutError as URLLib3ConnectTimeoutError
from urllib3.exceptions import NewConnectionError, ProtocolError
from urllib3.exceptions import ReadTimeoutError as URLLib3ReadTimeoutError
from urllib3.exceptions import SSLError as URLLib3SSLError

from scaivault.egress import PinnedTarget

# botocore's own sender reads and writes in 128 KiB blocks (urllib3's 16 KiB default slows large uploads).
_BLOCK_SIZE = 128 * 1024


class PinnedSender:
    """Sends botocore's prepared requests to ``target.address`` (a ``before-send`` handler; thread-safe, as
    s3transfer's upload threads need)."""

    def __init__(
        self,
        target: PinnedTarget,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int = 10,
        ca_bundle: str | None = None,
    ) -> None:
        self._target = target
        options: dict[str, Any] = {
            "port": target.port,
            "timeout": Timeout(connect=connect_timeout, read=read_timeout),
            "maxsize": max_connections,
            "retries": False,
            "blocksize": _BLOCK_SIZE,
        }
        self._pool: HTTPConnectionPool
        if target.scheme == "https":
            self._pool = AWSHTTPSConnectionPool(
                target.address,
                cert_reqs="CERT_REQUIRED",
                ca_certs=ca_bundle or get_cert_path(True),
                server_hostname=target.host,
                assert_hostname=target.host,
                **options,
            )
        elif target.scheme == "http":
            self._pool = AWSHTTPConnectionPool(target.address, **options)
        else:
            raise ValueError(f"botocore speaks http or https, not {target.scheme}")

    def __call__(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        if not self._target.is_origin_of(request.url):
            raise self._target.refuse_other(urlsplit(request.url)._replace(query="", fragment="").geturl())
        headers = HeadersDict(request.headers.items())
        host = headers.get("Host")
        if host is None:
            headers["Host"] = self._target.host_header
        elif str(host).lower() != self._target.host_header:
            raise self._target.refuse_other(str(host))
        parts = urlsplit(request.url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            response = self._pool.urlopen(
                method=request.method,
                url=path,
                body=request.body,
                headers=headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                chunked=str(headers.get("Transfer-Encoding", "")).lower() == "chunked",
                enforce_content_length=False,
            )
            http_response = AWSResponse(request.url, response.status, response.headers, response)
            if not request.stream_output:
                http_response.content  # noqa: B018 - read the body now, as botocore's own sender does
            return http_response
        # The same translation as botocore's sender, so its retry rules and error messages apply unchanged.
        except URLLib3SSLError as exc:
            raise SSLError(endpoint_url=request.url, error=exc) from exc
        except (NewConnectionError, socket.gaierror) as exc:
            raise EndpointConnectionError(endpoint_url=request.url, error=exc) from exc
        except URLLib3ConnectTimeoutError as exc:
            raise ConnectTimeoutError(endpoint_url=request.url, error=exc) from exc
        except URLLib3ReadTimeoutError as exc:
            raise ReadTimeoutError(endpoint_url=request.url, error=exc) from exc
        except ProtocolError as exc:
            raise ConnectionClosedError(error=exc, request=request, endpoint_url=request.url) from exc
        except Exception as exc:  # what botocore's sender does with any other transport failure
            raise HTTPClientError(error=exc) from exc

    def close(self) -> None:
        self._pool.close()


def pin_client(client: Any, target: PinnedTarget, *, ca_bundle: str | None = None) -> PinnedSender:
    """Make ``client`` (a botocore/boto3 client whose ``endpoint_url`` is the pinned URL's origin) send every request
    to the checked address; pin a client once. Timeouts and the connection limit are the client's own. Certificates
    are checked against botocore's bundled trust store, or ``ca_bundle`` (a PEM file) when given: the client's
    ``verify`` and ``AWS_CA_BUNDLE`` are not consulted. Returns the sender (``close()`` it with the client)."""
    if not target.is_origin_of(client.meta.endpoint_url):
        raise ValueError("the client's endpoint is not the pinned destination")
    config = client.meta.config
    sender = PinnedSender(
        target,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        max_connections=config.max_pool_connections,
        ca_bundle=ca_bundle,
    )
    client.meta.events.register("before-send", sender)
    return sender

