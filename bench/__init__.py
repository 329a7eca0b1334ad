"""Benchmarks: run the real service as a subprocess against a real SMTP sink on loopback."""
