"""Built-in plugin: the server reaches targets with a plain TCP connection."""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import TYPE_CHECKING

from flyway_core.errors import TargetError
from flyway_core.hookspecs import hookimpl
from flyway_core.protocol import ResetReason

if TYPE_CHECKING:
    from flyway_core.address import Address
    from flyway_core.settings import Settings

__all__ = ["DirectDialer"]

_UNREACHABLE = {
    errno.EHOSTUNREACH: ResetReason.UNREACHABLE,
    errno.EHOSTDOWN: ResetReason.UNREACHABLE,
    errno.ENETUNREACH: ResetReason.NETWORK_UNREACHABLE,
    errno.ENETDOWN: ResetReason.NETWORK_UNREACHABLE,
}


@hookimpl(trylast=True)
def dial_upstream(target: Address, settings: Settings) -> DirectDialer:
    return DIRECT


class DirectDialer:
    """Connects to the target itself; failures become typed reset reasons."""

    async def connect(self, target: Address, protocol: asyncio.Protocol) -> None:
        host = target.host or "localhost"
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: protocol, host, target.port)
        except ConnectionRefusedError:
            raise TargetError("connection refused", reason=ResetReason.REFUSED) from None
        except socket.gaierror as exc:
            raise TargetError(
                f"name not found ({exc.strerror})", reason=ResetReason.NAME_NOT_FOUND
            ) from None
        except TimeoutError:
            raise TargetError("timed out", reason=ResetReason.TIMED_OUT) from None
        except OSError as exc:
            reason = _UNREACHABLE.get(exc.errno or 0, ResetReason.INTERNAL)
            raise TargetError(exc.strerror or str(exc), reason=reason) from None

    def __str__(self) -> str:
        return "direct"


DIRECT = DirectDialer()
