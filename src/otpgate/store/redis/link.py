"""What the Redis store needs from a connection: send one command, get its reply.

Two implementations: ``fast_connection.PipelinedConnection`` (the fast path, one
auto-pipelined socket) and redis-py's own asyncio client
(``client.StockConnection``, ``StockClusterConnection`` on Redis Cluster). Each
takes a parsed ``redis_url.RedisUrl`` (one server, a master found through Sentinel, or
Cluster seeds and the one slot every key is in) and ``redis_tls.RedisTls``. The store
takes whichever it is given and only ever sees the errors below.
"""

from __future__ import annotations

from typing import Any, Protocol


class RedisConnectionError(Exception):
    """The server could not be reached or did not answer in time."""


class RedisNotSent(RedisConnectionError):
    """The command was never sent: there was no connection to send it on (the server
    refused or did not answer the connection). Nothing of it can run later."""


class RedisMisconfigured(RedisConnectionError):
    """Not an outage that may pass: the server's certificate was refused, the server
    wants a client certificate, no sentinel knows the master's name, or no cluster node
    will say where the slot is. Start-up stops on it."""


class ClientCertificateRequired(RedisMisconfigured):
    """The server dropped the TLS connection for want of a client certificate, and none
    is configured (its TLS 1.3 alert, "certificate required")."""

    def __init__(self) -> None:
        super().__init__(
            "the server requires a client certificate (mutual TLS) and none is configured:"
            " set REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE"
        )


class RedisReplyError(Exception):
    """The server answered with an error (the message is Redis's own, code first)."""


class RedisLink(Protocol):
    async def execute(self, *args: Any) -> Any:
        """Send one command and return its reply; raise one of the errors above."""

    async def close(self) -> None: ...
