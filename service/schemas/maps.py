"""Grid maps on the layer4 grid and where their cells lie in the uploaded image."""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
from pydantic import BaseModel, Field

from deepminer.grid import GridMapping
from service.maps import quantise

MapConvention = Literal[
    "centre of cell (i, j) = offset + scale * (i, j), in the uploaded image's pixel coordinates (row, column)"
]
MAP_CONVENTION: MapConvention = get_args(MapConvention)[0]
SIGNIFICANT_DIGITS = 6


def _round(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


class GridToImage(BaseModel):
    """Where the cells of a grid map lie in the uploaded image."""

    scale: tuple[float, float] = Field(description="Pixels per grid cell along (row, column).")
    offset: tuple[float, float] = Field(description="Pixel (row, column) of the centre of cell (0, 0).")
    image_shape: tuple[int, int] = Field(description="The uploaded image's (height, width) in pixels.")
    convention: MapConvention = MAP_CONVENTION

    @classmethod
    def from_mapping(cls, mapping: GridMapping) -> GridToImage:
        return cls(scale=mapping.scale, offset=mapping.offset, image_shape=mapping.image_shape)


MapEncoding = Literal["uint16", "json"]


class Map(BaseModel):
    """A map on the layer4 grid; upsample it onto the image with ``grid_to_image``.

    ``encoding`` says how ``values`` is written. ``uint16`` (the default of
    /explain): a base64 string of ``shape[0] * shape[1]`` little-endian uint16
    codes q in row-major order; ``value = offset + scale * q``, exact to
    ``scale / 2``. ``json``: nested lists of numbers rounded to 6 significant
    digits; ``scale`` and ``offset`` are null.
    """

    shape: tuple[int, int] = Field(description="Grid (rows, columns).")
    grid_to_image: GridToImage
    range: tuple[float, float] = Field(description="Smallest and largest value.")
    encoding: MapEncoding = Field(
        description=(
            "`uint16`: `values` is base64 of little-endian uint16 codes q, row-major, and value = offset + scale * q "
            "(error at most scale / 2). `json`: `values` is row-major nested lists, 6 significant digits."
        )
    )
    values: list[list[float]] | str = Field(description="The values, written as `encoding` says.")
    scale: float | None = Field(
        default=None, description="`uint16`: (max - min) / 65535, 0 for a constant map; null for `json`."
    )
    offset: float | None = Field(default=None, description="`uint16`: the smallest value; null for `json`.")

    @classmethod
    def from_array(cls, values: np.ndarray, mapping: GridMapping, encoding: MapEncoding = "json") -> Map:
        shape = (int(values.shape[0]), int(values.shape[1]))
        value_range = (_round(float(values.min())), _round(float(values.max())))
        if encoding == "uint16":
            q = quantise(values)
            return cls(
                shape=shape,
                grid_to_image=GridToImage.from_mapping(mapping),
                range=value_range,
                encoding="uint16",
                values=q.data,
                scale=q.scale,
                offset=q.offset,
            )
        return cls(
            shape=shape,
            grid_to_image=GridToImage.from_mapping(mapping),
            range=value_range,
            encoding="json",
            values=[[_round(v) for v in row] for row in values.tolist()],
        )
