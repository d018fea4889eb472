"""agentstage: the execution and operations layer for AI agents."""

__version__ = "0.1.0"
