"""Agreements: the config files' models, loading and merging, the shared vocabulary, durations
and business time. Pure; imports nothing else of the service but the package root."""
