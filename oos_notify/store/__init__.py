"""The store: engine and sessions, tables and their statuses, the outbox queue, the audit chain
and API keys. Imports the agreements and the package root only."""
