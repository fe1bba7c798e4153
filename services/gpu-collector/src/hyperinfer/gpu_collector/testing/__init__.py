"""Fakes of what the collector talks to, for tests and benches (never imported by the service)."""
