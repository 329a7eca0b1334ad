"""Delivery: the dispatcher that drains the outbox, template rendering, message building, SMTP,
the embedded capture server and the stored template sets. Imports incidents, store, agreements."""
