"""The explanation benchmark: blinded export, answer key, scoring and refused response files."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from annotations import AnnotationStore, NewAnnotation, load_annotation_rows
from deepminer.bundle import load_bundle
from deepminer.formulas import influence, softmax
from deepminer.imaging import network_input, read_image
from training.benchmark import (
    BLINDED_COLUMNS,
    ResponseError,
    draw_per_class,
    export_benchmark,
    load_fcn,
    score_answers,
    score_responses,
    unit_labels,
)
from training.cli import main as cli_main
from training.manifest import Finding, ImageRecord, read_manifest, write_manifest
from training.split import split_by_case

OTHER_BUNDLE = "cd" * 32


def _read(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def _read_key(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def labels_file(tiny_bundle, tmp_path_factory):
    """Even units labelled neutrally under this bundle; odd ones under another bundle, as not recognisable, or by
    an automatic procedure only."""
    rows = [{"unit_id": k, "annotator": "dr_a", "label": f"pattern {k}", "category": "Mass", "recognizable": True}
            for k in range(0, 512, 2)]
    rows += [{"unit_id": k, "annotator": "dr_b", "label": "OTHER MODEL", "category": "Mass", "recognizable": True,
              "bundle_hash": OTHER_BUNDLE} for k in range(1, 512, 2)]
    rows += [{"unit_id": k, "annotator": "dr_c", "label": "NOT RECOGNISABLE", "category": "Mass",
              "recognizable": False} for k in range(1, 512, 4)]
    rows += [{"unit_id": k, "annotator": "auto", "label": "AUTOMATIC", "category": "Mass", "recognizable": True,
              "source": "automatic"} for k in range(3, 512, 4)]
    path = tmp_path_factory.mktemp("labels") / "labels.json"
    path.write_text(json.dumps(rows))
    return path


@pytest.fixture(scope="module")
def exported(tiny_bundle, phantom_manifest, labels_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmark")
    result = export_benchmark(tiny_bundle, phantom_manifest, out, labels_file=labels_file, seed=5, device="cpu",
                              progress=False)
    return result


def test_export_is_blinded_and_keyed(exported, tiny_bundle, phantom_manifest):
    bundle = load_bundle(tiny_bundle)
    blinded, key = _read(exported.blinded), _read_key(exported.key)
    assert tuple(blinded[0]) == BLINDED_COLUMNS
    rows = blinded[1:]
    n = len(rows)
    assert n == exported.cases == len(key) > 0
    assert [r[0] for r in rows] == [str(i) for i in range(1, n + 1)] == [k["Case #"] for k in key]
    assert all(len(r) == 3 and r[2] == "" for r in rows)
    assert [r[1] for r in rows] == [k["explanation"] for k in key]

    # the test split's benign and malignant mammograms, shuffled with the seed
    records = read_manifest(phantom_manifest)
    split = bundle.meta["split"]
    test = split_by_case(records, seed=split["seed"], fractions=tuple(split["fractions"]))["test"]
    expected = [r for r in test if r.pathology in ("benign", "malignant")]
    order = np.random.default_rng(5).permutation(len(expected))
    assert [k["image_id"] for k in key] == [expected[i].image_id for i in order]
    by_id = {r.image_id: r for r in records}
    for k in key:
        record = by_id[k["image_id"]]
        assert k["pathology"] == record.pathology and k["answer"] == {"malignant": "C", "benign": "B"}[record.pathology]
        assert k["case_id"] == record.case_id and record.pathology in k["findings"]

    # nothing but the explanation reaches the expert
    text = "\n".join(",".join(r) for r in rows).lower()  # the header names "Benign" itself
    for word in ("malignant", "benign", "other model", "not recognisable", "automatic"):
        assert word not in text
    for k in key:
        assert k["image_id"].lower() not in text and k["case_id"].lower() not in text
        assert k["malignant_probability"] not in text


def _keyed_influence(bundle, manifest, key_path):
    """Per answer-key row: the row, the image's FCN logits, and every unit's malignant influence on it."""
    fcn = load_fcn(bundle)
    weight, _ = bundle.head
    by_id = {r.image_id: r for r in read_manifest(manifest)}
    for k in _read_key(key_path):
        x = network_input(read_image(by_id[k["image_id"]].image_path), short_side=bundle.input_short_side)
        with torch.inference_mode():
            logits, features = (t[0].numpy() for t in fcn(torch.from_numpy(x)))
        yield k, logits, influence(features, weight)[2]


def test_explanations_are_the_most_influential_annotated_units(exported, tiny_bundle, phantom_manifest):
    bundle = load_bundle(tiny_bundle)
    for k, logits, scores in _keyed_influence(bundle, phantom_manifest, exported.key):
        # the paper's explanation: among the malignant class's ranked units, the labelled ones
        ranked = [u["unit_id"] for u in bundle.rankings["per_class"]["malignant"]["units"]]
        even = sorted((u for u in ranked if u % 2 == 0), key=lambda u: (-scores[u], u))[:3]
        assert even and [int(u) for u in k["unit_ids"].split()] == even
        assert k["explanation"] == "; ".join(f"pattern {u}" for u in even)
        probability = softmax(logits.reshape(3, -1).mean(axis=1))[2]
        assert float(k["malignant_probability"]) == pytest.approx(float(probability), abs=2e-6)


def test_explanations_never_leave_the_ranked_units(tiny_bundle, phantom_manifest, labels_file, tmp_path):
    """With the malignant ranking cut to its four last labelled units, labelled units that outrank them by
    influence on an image stay out of its explanation."""
    import shutil

    from deepminer.bundle import META_FILE, RANKINGS_FILE, finalise_bundle

    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, root)
    rankings = json.loads((root / RANKINGS_FILE).read_text())
    units = rankings["per_class"]["malignant"]["units"]
    kept = [u for u in units if u["unit_id"] % 2 == 0][-4:]
    assert len(kept) == 4
    rankings["per_class"]["malignant"]["units"] = kept
    (root / RANKINGS_FILE).write_text(json.dumps(rankings))
    meta = json.loads((root / META_FILE).read_text())
    finalise_bundle(root, meta)
    result = export_benchmark(root, phantom_manifest, tmp_path / "out", labels_file=labels_file, seed=5,
                              device="cpu", progress=False)
    ranked = [u["unit_id"] for u in kept]
    narrowed = False
    for k, _, scores in _keyed_influence(load_bundle(root), phantom_manifest, result.key):
        chosen = [int(u) for u in k["unit_ids"].split()]
        assert chosen == sorted(ranked, key=lambda u: (-scores[u], u))[:3]
        narrowed |= chosen != sorted(range(0, 512, 2), key=lambda u: (-scores[u], u))[:3]
    assert narrowed, "some image must have a labelled unit outside the four that outranks them"


def test_export_from_the_store_matches_the_file(exported, tiny_bundle, phantom_manifest, labels_file, tmp_path):
    bundle = load_bundle(tiny_bundle)
    url = f"sqlite:///{tmp_path / 'labels.db'}"
    store = AnnotationStore(url)
    store.init_schema()
    store.add_many(load_annotation_rows(labels_file, bundle_hash=bundle.hash))
    store.close()
    out = tmp_path / "from_db"
    code = cli_main(["-q", "export", "--bundle", str(tiny_bundle), "--manifest", str(phantom_manifest),
                     "--db", url, "--out", str(out), "--seed", "5", "--device", "cpu"])
    assert code == 0
    assert (out / "blinded.csv").read_text() == exported.blinded.read_text()
    assert (out / "answer_key.csv").read_text() == exported.key.read_text()


def test_export_refuses_another_split_and_no_labels(tiny_bundle, phantom_records, tmp_path, labels_file):
    manifest = tmp_path / "fewer.csv"
    write_manifest(manifest, phantom_records[:12])
    with pytest.raises(ValueError, match="use the manifest the bundle was built from"):
        export_benchmark(tiny_bundle, manifest, tmp_path / "a", labels_file=labels_file, progress=False)
    empty = tmp_path / "none.json"
    empty.write_text("[]")
    with pytest.raises(ValueError, match="no unit of bundle .* has an expert label answered as recognisable"):
        export_benchmark(tiny_bundle, manifest, tmp_path / "b", labels_file=empty, progress=False)


def test_export_admits_automatic_labels_only_when_asked(tiny_bundle, phantom_manifest, tmp_path):
    ranked = [u["unit_id"] for u in load_bundle(tiny_bundle).rankings["per_class"]["malignant"]["units"]]
    labels = tmp_path / "automatic.json"
    labels.write_text(json.dumps([{"unit_id": k, "annotator": "auto", "label": f"concept {k}", "category": "Mass",
                                   "recognizable": True, "source": "automatic"} for k in ranked]))
    with pytest.raises(ValueError, match="or admit automatic labels"):
        export_benchmark(tiny_bundle, phantom_manifest, tmp_path / "a", labels_file=labels, progress=False)
    result = export_benchmark(tiny_bundle, phantom_manifest, tmp_path / "b", labels_file=labels,
                              include_automatic=True, device="cpu", progress=False)
    assert result.explaining_units == len(ranked)
    assert all(k["explanation"].startswith("concept ") for k in _read_key(result.key))


def test_export_draws_per_class_or_refuses(tiny_bundle, phantom_manifest, labels_file, tmp_path):
    # the tiny test split has malignant mammograms only, so no balanced sample can be drawn
    with pytest.raises(ValueError, match="holds 0 benign mammograms, fewer than the 1 per class asked for"):
        export_benchmark(tiny_bundle, phantom_manifest, tmp_path, labels_file=labels_file, per_class=1,
                         progress=False)


def _cases(benign, malignant):
    finding = {p: Finding(finding_id="1", pathology=p, concept="mass", lexicon="Mass", descriptors={},
                          mask_path=Path("/x/m.png")) for p in ("benign", "malignant")}
    kinds = ["benign"] * benign + ["malignant"] * malignant
    return [ImageRecord(image_id=f"i{i}", case_id=f"c{i}", image_path=Path(f"/x/{i}.png"), view="CC",
                        laterality="L", findings=(finding[p],)) for i, p in enumerate(kinds)]


def test_draw_per_class_is_balanced_seeded_and_without_replacement():
    images = _cases(benign=300, malignant=200)
    drawn = draw_per_class(images, 165, seed=4)
    assert len(drawn) == 330 and len({r.image_id for r in drawn}) == 330
    assert sum(r.pathology == "benign" for r in drawn) == sum(r.pathology == "malignant" for r in drawn) == 165
    assert [r.image_id for r in drawn] == [r.image_id for r in draw_per_class(images, 165, seed=4)]
    assert [r.image_id for r in drawn] != [r.image_id for r in draw_per_class(images, 165, seed=5)]
    order = [int(r.image_id[1:]) for r in drawn]
    assert order == sorted(order)  # the input's order is kept; the export shuffles afterwards
    with pytest.raises(ValueError, match="holds 200 malignant mammograms, fewer than the 201 per class"):
        draw_per_class(images, 201, seed=0)


def test_unit_labels_prefer_experts_then_majority_then_latest():
    h = "ab" * 32

    def a(unit, who, label, source="expert", bundle=h):
        return NewAnnotation(unit_id=unit, annotator=who, label=label, category="Mass", bundle_hash=bundle,
                             source=source, recognizable=True)

    labels = unit_labels(
        [
            a(1, "auto", "auto label", source="automatic"),
            a(1, "x", "Spiculation"),
            a(2, "auto", "only automatic", source="automatic"),
            a(3, "x", "old"), a(3, "x", "Calcification"), a(3, "y", "Mass edge"), a(3, "z", "Mass edge"),
            a(4, "x", "other bundle", bundle="cd" * 32),
        ],
        bundle_hash=h,
    )
    assert labels == {1: "Spiculation", 3: "Mass edge"}  # expert labels only, by default
    wider = unit_labels(
        [a(1, "auto", "auto label", source="automatic"), a(1, "x", "Spiculation"),
         a(2, "auto", "only automatic", source="automatic")],
        bundle_hash=h, include_automatic=True,
    )
    assert wider == {1: "Spiculation", 2: "only automatic"}


def test_unit_labels_need_a_recognisable_answer():
    h = "ab" * 32

    def a(unit, who, label, recognizable):
        return NewAnnotation(unit_id=unit, annotator=who, label=label, category="Mass", bundle_hash=h,
                             recognizable=recognizable)

    labels = unit_labels(
        [
            a(1, "x", "Spiculation", True),
            a(2, "x", "unanswered", None),
            a(3, "x", "withdrawn", True), a(3, "x", "withdrawn", False),  # x's latest answer: not recognisable
            a(4, "x", "kept", True), a(4, "y", "no", False),
        ],
        bundle_hash=h,
    )
    assert labels == {1: "Spiculation", 4: "kept"}


def test_paper_figure_182_of_330():
    truth = ["C"] * 165 + ["B"] * 165
    answers = ["C"] * 100 + ["B"] * 65 + ["B"] * 82 + ["C"] * 83  # 100 + 82 = 182 correct
    score = score_answers(truth, answers)
    assert (score.n, score.correct) == (330, 182)
    assert score.accuracy == pytest.approx(182 / 330)
    assert score.p_value == pytest.approx(0.0346, abs=1e-4)
    assert score.sensitivity == pytest.approx(100 / 165) and score.specificity == pytest.approx(82 / 165)


def _write(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def key(tmp_path):
    answers = ["C", "B", "C", "B", "C", "B"]
    return _write(tmp_path / "key.csv", ["Case #", "image_id", "answer"],
                  [[i, f"img{i}", a] for i, a in enumerate(answers, start=1)])


def test_score_hand_made_responses(tmp_path, key, capsys):
    given = ["C", " c ", "C", "B", "B", "b"]  # cases 1..6; spaces and lower case are fine
    responses = _write(tmp_path / "r.csv", BLINDED_COLUMNS, [[i, "expl", a] for i, a in enumerate(given, start=1)])
    score = score_responses(responses, key)
    # correct: 1, 3, 4, 6; TP = 1, 3; FN = 5; TN = 4, 6; FP = 2
    assert (score.n, score.correct, score.malignant, score.benign) == (6, 4, 3, 3)
    assert score.sensitivity == pytest.approx(2 / 3) and score.specificity == pytest.approx(2 / 3)
    assert score.p_value == pytest.approx(22 / 64)  # P(X >= 4), X ~ Bin(6, 1/2)
    out = tmp_path / "score.json"
    assert cli_main(["score", "--responses", str(responses), "--key", str(key), "--out", str(out)]) == 0
    assert "accuracy = 66.7%" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["correct"] == 4 and saved["p_value"] == pytest.approx(22 / 64) and saved["excluded"] == []


def test_paper_figure_through_files_and_cli(tmp_path, capsys):
    truth = ["C"] * 165 + ["B"] * 165
    answers = ["C"] * 100 + ["B"] * 65 + ["B"] * 82 + ["C"] * 83
    key = _write(tmp_path / "key.csv", ["Case #", "answer"], [[i + 1, t] for i, t in enumerate(truth)])
    responses = _write(tmp_path / "r.csv", BLINDED_COLUMNS, [[i + 1, "", a] for i, a in enumerate(answers)])
    out = tmp_path / "score.json"
    assert cli_main(["score", "--responses", str(responses), "--key", str(key), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "p = 0.03456" in printed and "H1: accuracy > 0.5 (balanced: 165 malignant, 165 benign)" in printed
    assert json.loads(out.read_text())["correct"] == 182


def test_unbalanced_sample_is_tested_against_the_majority_rate(tmp_path, capsys):
    # 60 benign, 40 malignant: answering B throughout scores 60%, which is no evidence at all
    truth = ["B"] * 60 + ["C"] * 40
    always_benign = score_answers(truth, ["B"] * 100)
    assert always_benign.chance == pytest.approx(0.6) and always_benign.accuracy == pytest.approx(0.6)
    assert always_benign.p_value > 0.5
    from scipy.stats import binomtest

    answers = ["B"] * 55 + ["C"] * 5 + ["C"] * 20 + ["B"] * 20  # 75 correct
    score = score_answers(truth, answers)
    assert score.correct == 75
    assert score.p_value == pytest.approx(binomtest(75, 100, 0.6, alternative="greater").pvalue)
    assert score.p_value > binomtest(75, 100, 0.5, alternative="greater").pvalue
    key = _write(tmp_path / "key.csv", ["Case #", "answer"], [[i + 1, t] for i, t in enumerate(truth)])
    responses = _write(tmp_path / "r.csv", BLINDED_COLUMNS, [[i + 1, "", a] for i, a in enumerate(answers)])
    assert cli_main(["score", "--responses", str(responses), "--key", str(key)]) == 0
    printed = capsys.readouterr().out
    assert "H1: accuracy > 0.6, the majority-class rate: the sample is unbalanced (60 of 100 benign)" in printed


def test_bad_responses_are_reported_by_row(tmp_path, key, capsys):
    rows = [
        [1, "e", ""],  # row 1: blank
        [2, "e", "X"],  # row 2: not C/B
        ["x7", "e", "C"],  # row 3: malformed case number
        [99, "e", "B"],  # row 4: not in the key
        [3, "e", "C"],  # row 5
        [3, "e", "B"],  # row 6: duplicate
    ]  # cases 4, 5, 6 missing
    responses = _write(tmp_path / "bad.csv", BLINDED_COLUMNS, rows)
    with pytest.raises(ResponseError) as exc:
        score_responses(responses, key)
    problems = exc.value.problems
    assert [p.row for p in problems] == [1, 2, 3, 4, 6, None, None, None]
    assert [p.case for p in problems[-3:]] == ["4", "5", "6"]
    assert "blank" in problems[0].problem and "'X'" in problems[1].problem and "first on row 5" in problems[4].problem

    assert cli_main(["score", "--responses", str(responses), "--key", str(key)]) == 2
    err = capsys.readouterr().err
    for where in ("row 1 ", "row 2 ", "row 3 ", "row 4 ", "row 6 ", "case 99 is not in the answer key"):
        assert where in err
    # --allow-blank excuses blanks and missing cases only
    assert cli_main(["score", "--responses", str(responses), "--key", str(key), "--allow-blank"]) == 2


def test_allow_blank_excludes_and_reports(tmp_path, key):
    responses = _write(tmp_path / "r.csv", BLINDED_COLUMNS, [[1, "e", "C"], [2, "e", " "], [3, "e", "B"]])
    with pytest.raises(ResponseError, match="blank answer"):
        score_responses(responses, key)
    score = score_responses(responses, key, allow_blank=True)
    assert (score.n, score.correct) == (2, 1)
    assert [(p.row, p.case) for p in score.excluded] == [(2, "2"), (None, "4"), (None, "5"), (None, "6")]
    missing_column = _write(tmp_path / "m.csv", ["Case #", "answer?"], [[1, "C"]])
    with pytest.raises(ValueError, match="missing column"):
        score_responses(missing_column, key)
