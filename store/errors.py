"""The storage layer's exceptions: callers catch `StoreError` for anything raised here."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error the storage layer raises on purpose."""


class MigrationError(StoreError):
    """The migration files or the recorded schema history are inconsistent."""


class ModeError(StoreError):
    """The database has no recorded storage mode: migrations have not been applied."""
