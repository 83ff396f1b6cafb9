"""Liveness and readiness."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from service.schemas.model import ModelOut


class Liveness(BaseModel):
    """The process answers."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """The bundle is loaded, the backend warmed up and the store reachable."""

    status: Literal["ready"] = "ready"
    model: ModelOut
