"""The ``lossy`` fixture: client and server through the relay at 5% loss, 30 ms each way."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from kcp_pairs import KcpPair, kcp_pair


@pytest.fixture
async def lossy() -> AsyncIterator[KcpPair]:
    async with kcp_pair() as pair:
        yield pair
