from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import EchoVendor, run_echo_vendor


@pytest.fixture
async def echo() -> AsyncIterator[EchoVendor]:
    async with run_echo_vendor() as vendor:
        yield vendor


@pytest.fixture
def shared_corpus() -> Path:
    """The read-only shared corpus, beside the project's folder."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
    if not path.is_dir():
        pytest.skip("../shared/corpus is not present beside the project")
    return path
