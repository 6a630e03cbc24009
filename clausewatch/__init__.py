"""clausewatch: quantitative facility standards as live, enforced, traceable checks.

This package is the composition root, a leaf nothing else imports: the command line (`cli/`),
settings, the service's wiring (`service.py`) and the embedded database and broker of the demo.
The parts it composes are the top-level packages `rules` (pure engine), `config` (operator
files), `store` (PostgreSQL), `alerts`, `energy`, `compliance` (domain services), `ingest` (MQTT
in), `api` (HTTP out), `edge` (gateway) and `simulators`: docs/design.md has the map.
"""

__version__ = "0.1.0"
