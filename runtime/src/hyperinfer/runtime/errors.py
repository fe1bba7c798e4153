"""Runtime errors.

RuntimeStartupError            start-up cannot continue; the message is the one line printed
 ├── SettingsError             a setting is missing or malformed
 ├── DependencyUnavailable     NATS / Redis / PostgreSQL could not be reached in time
 └── PortInUse                 the HTTP port is taken
"""

from __future__ import annotations


class RuntimeStartupError(Exception):
    """Fatal at start-up; ``str(exc)`` is one clear line for the operator."""


class SettingsError(RuntimeStartupError):
    pass


class DependencyUnavailable(RuntimeStartupError):
    pass


class PortInUse(RuntimeStartupError):
    pass
