"""Storage on PostgreSQL (TimescaleDB when present): migrations, the batch writer, rollups,
partitions, checkpoints and reading queries. See docs/storage.md."""

from ingest.store.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from ingest.store.errors import MigrationError, ModeError, StoreError
from ingest.store.migrate import migrate, schema_version
from ingest.store.mode import storage_mode
from ingest.store.partitions import apply_retention, ensure_partitions
from ingest.store.pool import connect, make_pool
from ingest.store.readings import (
    BucketPoint,
    ConsumptionPoint,
    QueryError,
    RawPoint,
    consumption,
    query_readings,
)
from ingest.store.rollups import refresh_rollups
from ingest.store.writer import BatchWriter, WriterClosed, WriterStats
from ingest.store.writes import (
    Batch,
    DeadLetter,
    EventRow,
    PartitionCache,
    ReadingRow,
    write_batch,
    write_compliance_intervals,
    write_dead_letters,
    write_events,
    write_late_readings,
    write_readings,
)

__all__ = [
    "Batch",
    "BatchWriter",
    "BucketPoint",
    "Checkpoint",
    "ConsumptionPoint",
    "DeadLetter",
    "EventRow",
    "MigrationError",
    "ModeError",
    "PartitionCache",
    "QueryError",
    "RawPoint",
    "ReadingRow",
    "StoreError",
    "WriterClosed",
    "WriterStats",
    "apply_retention",
    "connect",
    "consumption",
    "ensure_partitions",
    "load_checkpoint",
    "make_pool",
    "migrate",
    "query_readings",
    "refresh_rollups",
    "save_checkpoint",
    "schema_version",
    "storage_mode",
    "write_batch",
    "write_compliance_intervals",
    "write_dead_letters",
    "write_events",
    "write_late_readings",
    "write_readings",
]
