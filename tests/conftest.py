"""Shared pytest fixtures."""

from __future__ import annotations

import pytest

from tests.support import CLUSTER
from webhook.cluster.files import FileState


@pytest.fixture(scope="session")
def cluster() -> FileState:
    """The fixture cluster in tests/fixtures/cluster, read once."""
    return FileState.from_directory(CLUSTER)
