"""Adapters of the config service: PostgreSQL storage and snapshot publishing."""
