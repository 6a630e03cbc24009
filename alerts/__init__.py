"""Alerts, responsibility and the ledger (docs/alerts.md).

binding (who answers for a space and domain at a time) · record (engine outputs → alerts) ·
lifecycle (acknowledge, close) · policy (what a clause version asks of the lifecycle) ·
escalation · notify (webhooks) · export (台账 CSV) · reads (what the API and the live stream
query). The registry and the ledger they write to are in store/.
"""
