"""Storage: the engine and sessions, dialect helpers, portable column types, and the tables by area.

Knows SQLAlchemy and the two dialects; knows nothing of use cases. Everything above it may import it.
"""
