"""ORM mapping of the unit-label table; portable between SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import CheckConstraint, DateTime, Dialect, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from annotations import lexicon

TABLE_NAME = "unit_annotations"


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that goes in timezone-aware and always comes out timezone-aware UTC.

    SQLite keeps no offset, so UTC wall time is stored there and UTC is
    re-attached on the way out; PostgreSQL stores ``timestamptz``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"timestamps must be timezone-aware, got naive {value!r}")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of the store; constraint names are fixed so errors can be recognised."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_name)s",
            "uq": "uq_%(table_name)s_%(constraint_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Annotation(Base):
    """One version of one annotator's label for one unit. Rows are only ever inserted."""

    __tablename__ = TABLE_NAME
    __table_args__ = (
        UniqueConstraint("unit_id", "annotator", "version", name="version"),
        CheckConstraint("unit_id >= 0", name="unit_id_nonnegative"),
        CheckConstraint("version >= 1", name="version_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    unit_id: Mapped[int] = mapped_column(Integer, index=True)
    annotator: Mapped[str] = mapped_column(String(lexicon.MAX_ANNOTATOR_LENGTH))
    source: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(lexicon.MAX_LABEL_LENGTH))
    category: Mapped[str] = mapped_column(String(64))
    cancer_association: Mapped[str] = mapped_column(String(8))
    recognizable: Mapped[bool | None] = mapped_column()
    phenomena: Mapped[str | None] = mapped_column(String(8))
    description: Mapped[str] = mapped_column(Text)
    bundle_hash: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"Annotation(id={self.id}, unit_id={self.unit_id}, annotator={self.annotator!r}, version={self.version})"
