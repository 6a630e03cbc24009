"""ingest."""

from rules import refuse_stale_extensions

# The decoder may be compiled (setup.py): never from another version of its source.
refuse_stale_extensions(__name__, __file__)
