"""PostgreSQL, the one store (TimescaleDB features when the extension is loaded, native
partitioning otherwise): the pool, the schema (`migrations/`, applied by `migrate`), what the
data path writes (`batches`, `checkpoints`), what readers query (`readings`, `rollups`), the site
model as stored (`registry`: sites, spaces, devices, parties, assignments, clause versions), the
hash-chained ledger (`ledger`), and the storage jobs (`partitions`, `rollups`). See
docs/storage.md."""
