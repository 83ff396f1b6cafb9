"""The explanation benchmark (paper §3.2): can an expert tell cancer from benign by the explanation alone?

:mod:`~training.benchmark.export` writes the blinded cases and their answer key
(``python -m training export``); :mod:`~training.benchmark.scoring`
scores a filled-in file against the key (``python -m training score``);
:mod:`~training.benchmark.files` names the two files and their columns.
"""

from __future__ import annotations

from deepminer.fcn import load_fcn
from training.benchmark.export import (
    EXPLAINED_CLASS,
    LABEL_SEPARATOR,
    ExportResult,
    benchmark_images,
    draw_per_class,
    export_benchmark,
    most_influential_annotated,
    ranked_units,
    unit_labels,
)
from training.benchmark.files import ANSWERS, BLINDED_COLUMNS, BLINDED_FILE, KEY_COLUMNS, KEY_FILE
from training.benchmark.scoring import (
    ResponseError,
    RowProblem,
    Score,
    format_score,
    read_key,
    score_answers,
    score_responses,
    write_score,
)

__all__ = [
    "ANSWERS",
    "BLINDED_COLUMNS",
    "BLINDED_FILE",
    "EXPLAINED_CLASS",
    "KEY_COLUMNS",
    "KEY_FILE",
    "LABEL_SEPARATOR",
    "ExportResult",
    "ResponseError",
    "RowProblem",
    "Score",
    "benchmark_images",
    "draw_per_class",
    "export_benchmark",
    "format_score",
    "load_fcn",
    "most_influential_annotated",
    "ranked_units",
    "read_key",
    "score_answers",
    "score_responses",
    "unit_labels",
    "write_score",
]
