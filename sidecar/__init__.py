"""MirApi sidecar: the reliability proxy that runs beside an app."""

__version__ = "0.1.0"
