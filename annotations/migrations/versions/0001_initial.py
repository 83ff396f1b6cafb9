"""The unit-label table as first released: one row per version of one annotator's label for one unit.

Revision ID: 0001
Revises:
Created: 2026-11-21

Written out in full rather than imported from ``annotations.models``: a
revision must keep creating the same schema when the models change later.
``tests/deploy/test_migrations.py`` checks that head equals the models.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLE = "unit_annotations"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=False),
        sa.Column("annotator", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=120), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("cancer_association", sa.String(length=8), nullable=False),
        sa.Column("recognizable", sa.Boolean(), nullable=True),
        sa.Column("phenomena", sa.String(length=8), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("bundle_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unit_annotations")),
        sa.UniqueConstraint("unit_id", "annotator", "version", name=op.f("uq_unit_annotations_version")),
        sa.CheckConstraint("unit_id >= 0", name=op.f("ck_unit_annotations_unit_id_nonnegative")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_unit_annotations_version_positive")),
    )
    op.create_index(op.f("ix_unit_annotations_unit_id"), TABLE, ["unit_id"])
    op.create_index(op.f("ix_unit_annotations_bundle_hash"), TABLE, ["bundle_hash"])


def downgrade() -> None:
    op.drop_index(op.f("ix_unit_annotations_bundle_hash"), table_name=TABLE)
    op.drop_index(op.f("ix_unit_annotations_unit_id"), table_name=TABLE)
    op.drop_table(TABLE)
