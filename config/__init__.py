"""Operator files: strict YAML (`documents`), a configuration of sites and clauses (`files`),
clause tests as data (`clausetests`), `clausewatch check` (`check`), service URLs (`urls`), the
autoescaping Jinja2 environment of the HTML templates packages ship (`templates`), the CSV
writer every spreadsheet file is written with (`csvcells`: no cell read as a formula), and the
configuration shipped with the package (`BUNDLED_DIR`: the demo site, one clause file per
standard, clause tests, scenarios, the edge gateway's example, emission factors, Mosquitto)."""

from pathlib import Path

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
