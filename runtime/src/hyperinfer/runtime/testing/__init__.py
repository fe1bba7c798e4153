"""Test support: real NATS, Redis and PostgreSQL processes on free loopback ports.

Nothing here is a fake: each class runs the real server binary so tests can stop and
restart a dependency. ``plugin`` exposes them as pytest fixtures.
"""
