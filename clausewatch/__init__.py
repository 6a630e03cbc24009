"""clausewatch: quantitative facility standards as live, enforced, traceable checks.

This package is the composition root: settings, the command line and the demo. The parts it
composes live in the top-level packages `rules` (pure engine), `ingest` (MQTT and storage),
`api` (HTTP), `edge` (gateway) and `simulators`.
"""

from importlib import resources
from pathlib import Path

__version__ = "0.1.0"


def bundled_config_dir() -> Path:
    """The site model and clause configs shipped with the package (used by `clausewatch demo`)."""
    return Path(str(resources.files("clausewatch") / "config"))
