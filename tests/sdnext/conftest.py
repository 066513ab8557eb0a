"""Fixtures shared by the SD.Next client and stand-in tests."""

import pytest


@pytest.fixture
def anyio_backend():
    return "asyncio"
