"""The benchmark's two files: the blinded cases for the expert and the answer key (their names and columns)."""

from __future__ import annotations

BLINDED_COLUMNS = ("Case #", "DeepMiner Explanation", "Cancer or Benign (C/B)?")
KEY_COLUMNS = (
    "Case #",
    "image_id",
    "case_id",
    "pathology",
    "answer",
    "findings",
    "malignant_probability",
    "explanation",
    "unit_ids",
    "influences",
)
BLINDED_FILE = "blinded.csv"
KEY_FILE = "answer_key.csv"
ANSWERS = {"malignant": "C", "benign": "B"}
