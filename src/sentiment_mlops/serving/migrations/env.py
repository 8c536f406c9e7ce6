"""How Alembic runs the prediction log's migrations: on the connection `log_database.migrate`
hands it, inside that connection's transaction (locked against other workers migrating)."""

from __future__ import annotations

from alembic import context

from sentiment_mlops.serving.log_database import VERSION_TABLE
from sentiment_mlops.serving.predictions import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run the prediction log's migrations with sentiment_mlops.serving.log_database.migrate"
    )
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,  # SQLite can alter a table only by copying it
)
with context.begin_transaction():
    context.run_migrations()
