"""Scoring the explanation benchmark (paper §3.2): an expert's answers against the answer key.

:func:`score_responses` compares a filled-in ``blinded.csv`` with the key:
accuracy, sensitivity (malignant = "C" = positive), specificity and the
one-sided exact binomial p-value for accuracy above chance, where chance is
the majority-class rate of the scored cases (0.5 when they are balanced, as
in the paper; always answering the majority class would score it otherwise).
A response file with a blank, malformed, unknown or duplicate row is refused
with every such row listed; ``allow_blank`` instead excludes blank (and
missing) answers and reports them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from training.benchmark.files import BLINDED_COLUMNS


@dataclass(frozen=True)
class RowProblem:
    """One response that cannot be scored: data ``row`` (1-based, header not counted; None when missing)."""

    row: int | None
    case: str
    problem: str

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row is not None else "no row"
        return f"{where} (case {self.case or '?'}): {self.problem}"


class ResponseError(ValueError):
    """The response file has rows that cannot be scored; ``problems`` lists every one."""

    def __init__(self, problems: Sequence[RowProblem]) -> None:
        self.problems = list(problems)
        listed = "\n  ".join(str(p) for p in self.problems)
        super().__init__(f"{len(self.problems)} response(s) cannot be scored:\n  {listed}")


@dataclass(frozen=True)
class Score:
    """Benchmark figures; sensitivity/specificity are None when a class is absent."""

    n: int
    correct: int
    accuracy: float
    sensitivity: float | None
    specificity: float | None
    p_value: float
    malignant: int
    benign: int
    chance: float = 0.5
    """The accuracy tested against: the majority-class rate of the scored cases."""
    test: str = "one-sided exact binomial test, H1: accuracy > 0.5"
    excluded: list[RowProblem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["excluded"] = [asdict(p) for p in self.excluded]
        return d


def score_answers(truth: Sequence[str], answers: Sequence[str]) -> Score:
    """Score paired "C"/"B" answers against the truth; "C" (cancer) is the positive class.

    ``accuracy = correct / n``; ``sensitivity = TP / (TP + FN)``;
    ``specificity = TN / (TN + FP)``; p-value ``P(X ≥ correct)`` for
    ``X ~ Binomial(n, chance)``, ``chance = max(malignant, benign) / n``: 0.5
    for a balanced sample as the paper's, else the accuracy of always
    answering the majority class, which an unbalanced sample gives for free.
    """
    from scipy.stats import binomtest

    if len(truth) != len(answers):
        raise ValueError(f"truth and answers must pair up, got {len(truth)} and {len(answers)}")
    if not truth:
        raise ValueError("no answers to score")
    bad = sorted({v for v in (*truth, *answers) if v not in ("C", "B")})
    if bad:
        raise ValueError(f"answers must be 'C' or 'B', got {bad}")
    t = np.asarray(truth) == "C"
    a = np.asarray(answers) == "C"
    n, correct = len(t), int((t == a).sum())
    tp, tn = int((t & a).sum()), int((~t & ~a).sum())
    pos, neg = int(t.sum()), int((~t).sum())
    chance = max(pos, neg) / n
    if pos == neg:
        test = f"one-sided exact binomial test, H1: accuracy > {chance:g} (balanced: {pos} malignant, {neg} benign)"
    else:
        majority, answer = ("malignant", "C") if pos > neg else ("benign", "B")
        test = (
            f"one-sided exact binomial test, H1: accuracy > {chance:.4g}, the majority-class rate: the sample is "
            f"unbalanced ({max(pos, neg)} of {n} {majority}), so always answering {answer} scores that"
        )
    return Score(
        n=n,
        correct=correct,
        accuracy=correct / n,
        sensitivity=tp / pos if pos else None,
        specificity=tn / neg if neg else None,
        p_value=float(binomtest(correct, n, chance, alternative="greater").pvalue),
        malignant=pos,
        benign=neg,
        chance=chance,
        test=test,
    )


def _read_table(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    # utf-8-sig: spreadsheets often prefix a byte-order mark.
    with Path(path).open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        header = [(name or "").strip() for name in reader.fieldnames or []]
        missing = [name for name in required if name not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; found {header}")
        return [{(k or "").strip(): (v or "") for k, v in row.items()} for row in reader]


def read_key(path: Path) -> dict[str, str]:
    """Case number → correct answer ("C"/"B") from an answer key."""
    key = {}
    for number, row in enumerate(_read_table(path, ("Case #", "answer")), start=1):
        case, answer = row["Case #"].strip(), row["answer"].strip().upper()
        if not case.isdigit() or answer not in ("C", "B") or case in key:
            raise ValueError(f"{path}: row {number} is not a valid key entry: {row}")
        key[case] = answer
    if not key:
        raise ValueError(f"{path}: the answer key is empty")
    return key


def score_responses(responses: Path, key_path: Path, *, allow_blank: bool = False) -> Score:
    """Score a filled-in blinded file against its key.

    Raises :class:`ResponseError` listing every row with a malformed or
    unknown case number, a duplicate case, an answer other than C/B, and (unless
    ``allow_blank``) every blank answer and every key case without a row.
    With ``allow_blank`` those last two are excluded and listed in
    ``Score.excluded``.
    """
    key = read_key(key_path)
    answer_column = BLINDED_COLUMNS[2]
    problems: list[RowProblem] = []
    excluded: list[RowProblem] = []
    seen: dict[str, int] = {}
    truth, answers = [], []
    for number, row in enumerate(_read_table(responses, (BLINDED_COLUMNS[0], answer_column)), start=1):
        case, answer = row[BLINDED_COLUMNS[0]].strip(), row[answer_column].strip().upper()
        if not case.isdigit():
            problems.append(RowProblem(number, case, f"case number must be a whole number, got {case!r}"))
            continue
        case = str(int(case))
        if case not in key:
            problems.append(RowProblem(number, case, f"case {case} is not in the answer key"))
            continue
        if case in seen:
            problems.append(RowProblem(number, case, f"case {case} answered again (first on row {seen[case]})"))
            continue
        seen[case] = number
        if not answer:
            (excluded if allow_blank else problems).append(RowProblem(number, case, "blank answer"))
        elif answer not in ("C", "B"):
            problems.append(RowProblem(number, case, f"answer must be C or B, got {row[answer_column].strip()!r}"))
        else:
            truth.append(key[case])
            answers.append(answer)
    for case in key:
        if case not in seen:
            (excluded if allow_blank else problems).append(RowProblem(None, case, "case missing from the responses"))
    if problems:
        raise ResponseError(problems)
    if not answers:
        raise ResponseError(excluded or [RowProblem(None, "", "no answers")])
    return replace(score_answers(truth, answers), excluded=excluded)


def format_score(score: Score) -> str:
    """A short human-readable summary."""

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    lines = [
        f"n = {score.n} ({score.malignant} malignant, {score.benign} benign)",
        f"correct = {score.correct}, accuracy = {pct(score.accuracy)}",
        f"sensitivity = {pct(score.sensitivity)}, specificity = {pct(score.specificity)}",
        f"p = {score.p_value:.4g} ({score.test})",
    ]
    if score.excluded:
        lines.append(f"excluded {len(score.excluded)}: " + "; ".join(str(p) for p in score.excluded))
    return "\n".join(lines)


def write_score(score: Score, path: Path) -> None:
    """Save the figures (and the excluded rows) as JSON."""
    Path(path).write_text(json.dumps(score.to_json(), indent=1) + "\n")
