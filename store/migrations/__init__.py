"""Schema migrations, applied by store.migrate (files NNNN_name.sql|py)."""
