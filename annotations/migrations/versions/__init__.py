"""Revisions of the unit-label store, oldest first by their ``down_revision`` chain."""
