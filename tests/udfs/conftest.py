"""The UDFs' open() freezes the worker's heap (udfs.worker); here the worker is pytest itself."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _unfrozen_heap() -> Iterator[None]:
    yield
    gc.unfreeze()
