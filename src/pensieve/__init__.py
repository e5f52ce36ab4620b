"""pensieve: container forensics and incident response, offline and evidence-first."""

__version__ = "0.1.0"
