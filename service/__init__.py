"""GraphQL-style field selection on plain REST, over async SQLAlchemy."""

__version__ = "0.1.0"
