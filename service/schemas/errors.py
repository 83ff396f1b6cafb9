"""The body of every error response."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    """What went wrong, for programs (``code``) and people (``message``)."""

    code: str = Field(description="Stable machine-readable error code, e.g. `corrupt_image`.")
    message: str = Field(description="What was received and what is accepted.")
    field: str | None = Field(description="The request field at fault (`file`, `top_k`, `label`…), or null.")


class ErrorResponse(BaseModel):
    """Body of every error response."""

    error: ErrorDetail
