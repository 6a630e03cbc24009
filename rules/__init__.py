"""The pure rules engine: clause and site models, schedules, and the streaming evaluator.

Nothing in this package performs I/O or reads the wall clock: time comes in with the data
(event time) or through `advance(now)` from the caller.
"""
