"""Incidents: events in, planning (pure), acknowledgements and decisions, what QA is told, and
the queries the API answers with. Imports the store and the agreements."""
