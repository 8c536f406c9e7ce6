"""Alembic migrations of the prediction log (`serving/log_database.py` runs them to head).

A new migration: `alembic.command.revision(log_database.alembic_config(), "what changed",
autogenerate=True)` against a database at head, then review the file it writes in `versions/`.
"""
