"""Alerts, responsibility and the ledger (docs/alerts.md).

registry (sites, spaces, devices, parties, assignments, clause versions) · binding (who answers
for a space and domain at a time) · record (engine outputs → alerts) · lifecycle (acknowledge,
close) · escalation · notify (webhooks) · ledger (hash chain) · export (台账 CSV) · cli.
"""
