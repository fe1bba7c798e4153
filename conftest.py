"""Root conftest: real-infrastructure fixtures for every test in the repo."""

pytest_plugins = ["hyperinfer.runtime.testing.plugin"]
