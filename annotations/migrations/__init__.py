"""Alembic environment and revisions of the unit-label store; run them through :mod:`annotations.migrate`.

This is a package (as is ``versions/``) so that the revisions ship inside the
wheel and the container image, where there is no source checkout.
"""
