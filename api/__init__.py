"""The HTTP API and the pages it serves (docs/api.md)."""

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"  # the pages, scripts and styles
