"""The standards register (issue 10): search over clauses and versions (`search`), statistics
per site and organisation level with alarm-system health (`statistics`), quarterly
self-evaluation reports (`reports`), the opt-in public view (`public`) and backtests of clause
versions over stored history (`backtest`). Details: docs/register.md."""
