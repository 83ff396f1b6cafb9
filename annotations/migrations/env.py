"""Alembic's environment script: runs revisions on the connection :mod:`annotations.migrate` hands over.

There is no ``alembic.ini`` and no URL here: the caller opens the connection
(with the store's own engine settings and, on PostgreSQL, a lock held), and
the whole run happens inside that caller's transaction.
"""

from __future__ import annotations

from alembic import context

from annotations.migrate import CONNECTION_ATTRIBUTE, include_name
from annotations.models import Base

connection = context.config.attributes.get(CONNECTION_ATTRIBUTE)
if connection is None:
    raise RuntimeError("run the store's migrations through annotations.migrate (python -m annotations migrate)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    include_name=include_name,
    # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
