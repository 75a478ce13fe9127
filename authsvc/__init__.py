"""authsvc: passive voice and typing-rhythm authentication for contact centres."""

__version__ = "0.1.0"
