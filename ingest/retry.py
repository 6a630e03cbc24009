"""How ingest retries PostgreSQL: the pipeline's flushes and the checkpoint writer's saves.

While the database is unreachable (`psycopg.OperationalError`) a write is retried with
exponential backoff between these bounds, holding its data; a write the database refuses for
another reason (a bug, data it cannot hold) is given up after `MAX_REJECTED_ATTEMPTS`.
"""

RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0
MAX_REJECTED_ATTEMPTS = 3
