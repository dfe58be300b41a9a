"""A privacy-first authenticating reverse proxy for public library databases."""

__version__ = "0.1.0"
