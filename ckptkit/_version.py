"""The package version, on floor 0 so that the CLI (floor 3) can print it without importing the face."""

__version__ = "0.1.0"
