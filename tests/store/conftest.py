"""Fixtures of the storage tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def store_url(fresh_database_url: str) -> str:
    """A fully migrated database of this test alone (a copy of the session's template)."""
    return fresh_database_url
