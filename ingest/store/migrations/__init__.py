"""Schema migrations, applied by ingest.store.migrate (files NNNN_name.sql|py)."""
