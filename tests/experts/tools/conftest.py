from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from experts.tools.units import UnitConverter


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def units() -> AsyncIterator[UnitConverter]:
    """One started unit converter per test module (loading pint's registry takes a while)."""
    converter = UnitConverter()
    await converter.start()
    yield converter
    await converter.aclose()
