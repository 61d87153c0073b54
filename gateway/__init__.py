"""taskgate: a task-routing inference gateway."""

__version__ = "0.1.0"
