"""Text the store takes: NFC, no control characters but tab and newline, limits in characters; on both databases."""

from __future__ import annotations

import subprocess
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest

from annotations import AnnotationStore, AnnotationValidationError, NewAnnotation, import_annotations
from annotations.lexicon import MAX_LABEL_LENGTH
from annotations.validation import check_text

MakeItem = Callable[..., NewAnnotation]
BUNDLE_HASH = "ab" * 32

# Every C0 control character the store refuses: all of U+0000..U+001F but tab (U+0009) and newline (U+000A).
REFUSED_CONTROLS = [chr(c) for c in range(0x20) if chr(c) not in "\t\n"]


@pytest.mark.parametrize("control", REFUSED_CONTROLS, ids=lambda c: f"U+{ord(c):04X}")
def test_control_characters_are_refused_wherever_they_stand(control: str) -> None:
    for text, position in ((f"{control}Mass", 1), (f"Ma{control}ss", 3), (f"Mass{control}", 5)):
        with pytest.raises(AnnotationValidationError) as refused:
            check_text(text, field="label", max_length=MAX_LABEL_LENGTH)
        assert refused.value.field == "label"
        assert f"U+{ord(control):04X} at character {position}" in refused.value.message


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(AnnotationValidationError, match=r"U\+D83D at character 5: a lone surrogate"):
        check_text("Mass\ud83d", field="description", max_length=100)


def test_tab_and_newline_are_kept_and_crlf_becomes_newline() -> None:
    assert check_text("one\ttwo\nthree", field="description", max_length=100) == "one\ttwo\nthree"
    assert check_text("line one\r\nline two", field="description", max_length=100) == "line one\nline two"


def test_text_is_stored_in_nfc() -> None:
    decomposed = "Ve\u0301rification d\u2019un kyste"  # e + combining acute accent
    stored = check_text(decomposed, field="label", max_length=MAX_LABEL_LENGTH)
    assert stored == "V\u00e9rification d\u2019un kyste"
    assert unicodedata.is_normalized("NFC", stored)


def test_the_length_limit_counts_characters_of_the_normalised_text() -> None:
    # 120 "é" written as e + combining accent: 240 code points, 240 UTF-8 bytes more, 120 characters stored.
    decomposed = "e\u0301" * MAX_LABEL_LENGTH
    assert check_text(decomposed, field="label", max_length=MAX_LABEL_LENGTH) == "\u00e9" * MAX_LABEL_LENGTH
    assert check_text("\U0001f9ec" * MAX_LABEL_LENGTH, field="label", max_length=MAX_LABEL_LENGTH)  # 4 bytes each
    with pytest.raises(AnnotationValidationError, match="at most 120 characters, got 121"):
        check_text("\u00e9" * (MAX_LABEL_LENGTH + 1), field="label", max_length=MAX_LABEL_LENGTH)


@pytest.mark.parametrize("field", ["label", "annotator", "description"])
def test_the_store_refuses_nul_on_both_databases_and_writes_nothing(
    store: AnnotationStore, make_item: MakeItem, field: str
) -> None:
    with pytest.raises(AnnotationValidationError) as refused:
        store.add_many([make_item(unit_id=1), make_item(unit_id=2, **{field: "Edge\x00of a mass"})])
    assert refused.value.field == field
    assert store.count() == 0


def test_the_store_keeps_every_other_character_and_reads_it_back(store: AnnotationStore, make_item: MakeItem) -> None:
    text = "Re\u0301gion \U0001f9ec\t\u202e\ufeff \u00a0 \u4e73\u817a\n\u0645\u0646\u0637\u0642\u0629 \U0010fffd"
    written = store.add_many([make_item(label=text, annotator="Dr \u00c5se\u0301n", description=text)])
    (read,) = store.history(unit_id=written[0].unit_id)
    assert read.label == read.description == unicodedata.normalize("NFC", text).strip()
    assert read.annotator == "Dr \u00c5s\u00e9n"
    assert store.has_annotations(annotator="Dr A\u030as\u00e9n", bundle_hash=BUNDLE_HASH)  # NFD spelling finds it


def test_an_import_with_a_control_character_names_row_and_field_and_writes_nothing(
    store: AnnotationStore, tmp_path: Path
) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(
        b"unit_id,label,category,description\n"
        b"1,Spiculation,Mass,\"two\r\nlines\"\n"
        b"2,Calcifications\x1b[31m,Calcification,\n"
    )
    with pytest.raises(AnnotationValidationError) as refused:
        import_annotations(store, path, annotator="dr_a", bundle_hash=BUNDLE_HASH)
    assert (refused.value.row, refused.value.field) == (2, "label")
    assert "U+001B" in refused.value.message
    assert store.count() == 0


def test_an_import_stores_nfc_and_newlines(store: AnnotationStore, tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text('unit_id,label,category,description\n1,Spe\u0301culation,Mass,"two\r\nlines"\n', encoding="utf-8")
    assert import_annotations(store, path, annotator="dr_a", bundle_hash=BUNDLE_HASH) == 1
    (record,) = store.all_versions()
    assert (record.label, record.description) == ("Sp\u00e9culation", "two\nlines")


def test_the_command_line_import_refuses_nul(tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text('[{"unit_id": 7, "label": "Mass\\u0000", "category": "Mass"}]', encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'labels.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "annotations", "--db", db, "import", str(path), "--annotator", "dr_a"]
        + ["--bundle-hash", BUNDLE_HASH],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "row 1: label: must not contain U+0000 at character 5" in done.stderr
    assert AnnotationStore(db).count() == 0
