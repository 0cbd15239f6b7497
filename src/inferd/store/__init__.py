"""Persistence: SQLAlchemy 2 (async) tables, Alembic migrations and repositories.

All SQL lives in this package; nothing outside it builds a query.
"""
