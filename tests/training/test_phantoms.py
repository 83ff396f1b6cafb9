"""Phantom mammograms: determinism, anatomy, findings and the files on disk."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from training.manifest import ImageRecord, read_manifest
from training.phantoms import (
    FindingSpec,
    ImageSpec,
    PhantomConfig,
    PhantomImage,
    generate_phantoms,
    mass_pathology,
    plan_images,
    render_phantom,
    sample_finding,
)
from training.phantoms.findings import CALCIFICATION_TYPES, MASS_MARGINS, MASS_SHAPES, calcification_pathology

CONFIG = PhantomConfig(n_cases=6, height=256, seed=1)
FULL_SCALE = float(np.iinfo(np.uint16).max)

SUBTYPES: list[tuple[str, tuple[str, ...]]] = [
    ("mass", ("irregular", "spiculated")),
    ("mass", ("oval", "circumscribed")),
    ("mass", ("round", "indistinct")),
    ("calcification", ("fine pleomorphic",)),
    ("calcification", ("coarse popcorn",)),
    ("calcification", ("vascular",)),
]


def _finding(kind: str, subtype: tuple[str, ...], seed: int = 0) -> FindingSpec:
    drawn = sample_finding(np.random.default_rng(seed), mass_share=0.5, kind=kind)
    pathology = (
        mass_pathology(subtype[0], subtype[1], np.random.default_rng(seed))
        if kind == "mass"
        else calcification_pathology(subtype[0])
    )
    return FindingSpec(
        kind=kind,
        subtype=subtype,
        pathology=pathology,
        size=drawn.size,
        depth=drawn.depth,
        offset_cc=drawn.offset_cc,
        offset_mlo=drawn.offset_mlo,
        shape_seed=drawn.shape_seed,
    )


def _spec(view: str = "CC", laterality: str = "L", *findings: FindingSpec, index: int = 0) -> ImageSpec:
    return ImageSpec(index=index, case_index=0, laterality=laterality, view=view, findings=findings)


def _masks(phantom: PhantomImage) -> dict[str, np.ndarray]:
    return {f.finding_id: f.mask for f in phantom.findings}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated data set: 3 cases x 4 views, one of them normal."""
    out = tmp_path_factory.mktemp("phantoms")
    config = PhantomConfig(n_cases=3, height=160, seed=4)
    return generate_phantoms(out, config=config, workers=1, progress=False)


def test_same_seed_same_pixels_and_masks() -> None:
    spec = _spec("MLO", "R", _finding("mass", ("irregular", "spiculated")))
    first, second = render_phantom(spec, CONFIG), render_phantom(spec, CONFIG)
    assert np.array_equal(first.image, second.image)
    assert _masks(first).keys() == _masks(second).keys()
    for key, mask in _masks(first).items():
        assert np.array_equal(mask, _masks(second)[key]), key


def test_different_seed_or_index_different_pixels() -> None:
    spec = _spec("CC", "L")
    base = render_phantom(spec, CONFIG).image
    other_seed = render_phantom(spec, PhantomConfig(n_cases=6, height=256, seed=2)).image
    other_index = render_phantom(_spec("CC", "L", index=1), CONFIG).image
    assert not np.array_equal(base, other_seed)
    assert not np.array_equal(base, other_index)


def test_files_identical_whatever_the_worker_count(tmp_path: Path) -> None:
    config = PhantomConfig(n_cases=2, height=96, seed=9)
    digests = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        generate_phantoms(out, config=config, workers=workers, progress=False)
        digests.append(
            {
                p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(out.rglob("*"))
                if p.is_file()
            }
        )
    assert digests[0] == digests[1]
    assert len(digests[0]) > 8


def test_plan_cases_views_and_ids() -> None:
    config = PhantomConfig(n_cases=12, height=128, normal_fraction=0.25, seed=3)
    specs = plan_images(config)
    assert [s.index for s in specs] == list(range(12 * 4))
    assert specs[0].image_id == "P0000_L_CC" and specs[0].case_id == "P0000"
    by_case: dict[int, list[ImageSpec]] = {}
    for spec in specs:
        by_case.setdefault(spec.case_index, []).append(spec)
    normal = [c for c, images in by_case.items() if not any(s.findings for s in images)]
    assert len(normal) == 3  # round(0.25 * 12)
    for images in by_case.values():
        assert sorted((s.laterality, s.view) for s in images) == [("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")]
        sides = {s.laterality for s in images if s.findings}
        assert len(sides) <= 1, "findings must stay in one breast"
        with_findings = [s for s in images if s.findings]
        if with_findings:
            assert {s.view for s in with_findings} == {"CC", "MLO"}
            assert with_findings[0].findings == with_findings[1].findings
            assert 1 <= len(with_findings[0].findings) <= config.max_findings


def test_fewer_views_show_the_affected_breast() -> None:
    specs = plan_images(PhantomConfig(n_cases=8, views_per_case=2, normal_fraction=0.0, height=128))
    assert len(specs) == 16
    assert all(s.findings for s in specs)


def test_mlo_has_pectoral_mask_cc_does_not() -> None:
    mlo = render_phantom(_spec("MLO", "L"), CONFIG)
    cc = render_phantom(_spec("CC", "L"), CONFIG)
    assert "pectoral" in _masks(mlo) and _masks(mlo)["pectoral"].any()
    assert "pectoral" not in _masks(cc)
    assert "skin" in _masks(mlo) and "skin" in _masks(cc)
    pectoral = _masks(mlo)["pectoral"]
    height, width = pectoral.shape
    # Upper chest-wall corner, brighter than the rest of the breast.
    assert pectoral[: height // 2, : width // 2].sum() > 0.9 * pectoral.sum()
    rest = mlo.breast & ~pectoral
    assert mlo.image[pectoral].mean() > mlo.image[rest].mean()


@pytest.mark.parametrize("view", ["CC", "MLO"])
def test_laterality_puts_the_chest_wall_on_its_side(view: str) -> None:
    left = render_phantom(_spec(view, "L"), CONFIG)
    right = render_phantom(_spec(view, "R"), CONFIG)
    width = left.image.shape[1]
    quarter = width // 4
    for phantom, wall, far in ((left, 0, width - 1), (right, width - 1, 0)):
        assert phantom.breast[:, wall].mean() > 0.6
        assert phantom.breast[:, far].mean() < 0.1
    assert left.image[:, :quarter].mean() > left.image[:, -quarter:].mean()
    assert right.image[:, -quarter:].mean() > right.image[:, :quarter].mean()
    # The right view is the left one drawn the same way and mirrored.
    assert np.array_equal(np.fliplr(left.breast), right.breast)


def test_background_dark_breast_bright() -> None:
    phantom = render_phantom(_spec("CC", "L"), CONFIG)
    assert phantom.image.dtype == np.uint16
    assert np.percentile(phantom.image[~phantom.breast], 99) < 0.01 * FULL_SCALE
    assert np.median(phantom.image[phantom.breast]) > 0.15 * FULL_SCALE
    assert 0.3 < phantom.breast.mean() < 0.9


@pytest.mark.parametrize(("kind", "subtype"), SUBTYPES, ids=lambda x: str(x))
def test_lesion_brighter_than_surrounding_tissue(kind: str, subtype: tuple[str, ...]) -> None:
    for seed in range(3):
        finding = _finding(kind, subtype, seed=seed)
        phantom = render_phantom(_spec("MLO", "R", finding, index=seed), CONFIG)
        (lesion,) = phantom.lesions
        assert lesion.concept == finding.concept and lesion.pathology == finding.pathology
        mask = lesion.mask
        ring = ndimage.binary_dilation(mask, iterations=4) & ~mask & phantom.breast
        ring &= ~_masks(phantom)["pectoral"]
        image = phantom.image.astype(float)
        assert image[mask].mean() - image[ring].mean() > 0.04 * FULL_SCALE, (seed, finding.concept)


def test_masks_are_non_empty_and_inside_the_breast() -> None:
    for spec in plan_images(CONFIG):
        phantom = render_phantom(spec, CONFIG)
        assert len(phantom.lesions) == len(spec.findings)
        for found in phantom.findings:
            assert found.mask.shape == phantom.image.shape
            assert found.mask.any(), (spec.image_id, found.finding_id)
            assert not (found.mask & ~phantom.breast).any(), (spec.image_id, found.finding_id)


def test_lesion_sizes_follow_the_image_width() -> None:
    width = CONFIG.width
    for seed in range(4):
        mass = render_phantom(_spec("CC", "L", _finding("mass", ("oval", "circumscribed"), seed)), CONFIG)
        diameter = 2.0 * np.sqrt(mass.lesions[0].mask.sum() / np.pi)
        assert 0.05 * width <= diameter <= 0.16 * width
        cluster = render_phantom(_spec("CC", "L", _finding("calcification", ("fine pleomorphic",), seed)), CONFIG)
        ys, xs = np.nonzero(cluster.lesions[0].mask)
        assert 0.03 * width <= max(np.ptp(xs), np.ptp(ys)) <= 0.2 * width


def test_views_of_a_breast_agree_on_finding_depth() -> None:
    config = PhantomConfig(n_cases=6, height=192, normal_fraction=0.0, seed=5)
    depth: dict[tuple[int, str], dict[str, float]] = {}
    for spec in plan_images(config):
        if not spec.findings:
            continue
        phantom = render_phantom(spec, config)
        columns = np.nonzero(phantom.breast.any(axis=0))[0]
        for lesion in phantom.lesions:
            xs = np.nonzero(lesion.mask)[1]
            from_wall = xs.mean() if spec.laterality == "L" else config.width - 1 - xs.mean()
            depth.setdefault((spec.case_index, lesion.finding_id), {})[spec.view] = from_wall / len(columns)
    assert depth
    for key, views in depth.items():
        assert abs(views["CC"] - views["MLO"]) < 0.15, key


def test_mass_pathology_rule() -> None:
    rng = np.random.default_rng(0)
    for shape in MASS_SHAPES:
        for margin in MASS_MARGINS:
            draws = Counter(mass_pathology(shape, margin, rng) for _ in range(400))
            if shape == "irregular" or margin == "spiculated":
                assert draws == Counter(malignant=400)
            elif margin == "circumscribed":
                assert draws == Counter(benign=400)
            else:  # round / oval with indistinct margins: a fair, seeded coin
                assert 150 < draws["malignant"] < 250
    with pytest.raises(ValueError, match="'square'"):
        mass_pathology("square", "circumscribed", rng)


def test_sampled_findings_obey_the_rules() -> None:
    rng = np.random.default_rng(11)
    findings = [sample_finding(rng, mass_share=0.5) for _ in range(300)]
    for finding in findings:
        if finding.kind == "mass":
            shape, margin = finding.subtype
            assert finding.lexicon == "Mass"
            assert finding.descriptors == {"shape": shape, "margin": margin}
            assert finding.concept == f"{shape} mass with {margin} margins"
            if shape == "irregular" or margin == "spiculated":
                assert finding.pathology == "malignant"
            elif margin == "circumscribed":
                assert finding.pathology == "benign"
        else:
            assert finding.lexicon == "Calcification"
            assert finding.subtype[0] in CALCIFICATION_TYPES
            expected = "malignant" if finding.subtype[0] == "fine pleomorphic" else "benign"
            assert finding.pathology == expected
    share = sum(f.pathology == "malignant" for f in findings) / len(findings)
    assert 0.3 < share < 0.7, "benign and malignant should be roughly balanced"


def test_png_files_round_trip(dataset: Path) -> None:
    records = read_manifest(dataset)
    config = PhantomConfig(n_cases=3, height=160, seed=4)
    specs = {s.image_id: s for s in plan_images(config)}
    assert [r.image_id for r in records] == list(specs)
    for record in records[:4]:
        with Image.open(record.image_path) as image:
            assert image.mode == "I;16"
            pixels = np.asarray(image)
        assert pixels.dtype == np.uint16
        assert pixels.max() > 0.5 * FULL_SCALE and pixels.min() < 0.01 * FULL_SCALE
        phantom = render_phantom(specs[record.image_id], config)
        assert np.array_equal(pixels, phantom.image)
        for finding in record.findings:
            assert finding.mask_path.name == f"{record.image_id}_{finding.finding_id}.png"
            with Image.open(finding.mask_path) as mask_image:
                assert mask_image.mode == "L"
                mask = np.asarray(mask_image)
            assert set(np.unique(mask)) <= {0, 255}
            assert np.array_equal(mask == 255, _masks(phantom)[finding.finding_id])


def test_manifest_rows_describe_the_findings(dataset: Path) -> None:
    records = read_manifest(dataset)
    config = PhantomConfig(n_cases=3, height=160, seed=4)
    specs = {s.image_id: s for s in plan_images(config)}
    assert dataset.name == "manifest.csv"
    for record in records:
        spec = specs[record.image_id]
        assert (record.case_id, record.view, record.laterality) == (spec.case_id, spec.view, spec.laterality)
        anatomy = {f.concept: f for f in record.findings if not f.is_lesion}
        assert set(anatomy) == ({"pectoral muscle", "skin line"} if spec.view == "MLO" else {"skin line"})
        assert all(f.lexicon == "Normal tissue / anatomy" for f in anatomy.values())
        assert [f.concept for f in record.lesions] == [f.concept for f in spec.findings]
        assert [f.pathology for f in record.lesions] == [f.pathology for f in spec.findings]
        if not spec.findings:
            _assert_normal(record)


def _assert_normal(record: ImageRecord) -> None:
    assert record.lesions == ()
    assert record.pathology == "normal"
    assert all(f.pathology is None for f in record.findings)


def test_normal_cases_have_no_lesion_rows(dataset: Path) -> None:
    records = read_manifest(dataset)
    by_case: dict[str, list[ImageRecord]] = {}
    for record in records:
        by_case.setdefault(record.case_id, []).append(record)
    normal_cases = [c for c, images in by_case.items() if all(r.pathology == "normal" for r in images)]
    assert len(normal_cases) == round(0.34 * 3)
    for case in normal_cases:
        for record in by_case[case]:
            _assert_normal(record)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_cases": 0}, "n_cases must be at least 1, got 0"),
        ({"views_per_case": 5}, "views_per_case must be in 1..4, got 5"),
        ({"height": 10}, "height must be at least 64 px, got 10"),
        ({"normal_fraction": 1.5}, r"normal_fraction must be in \[0, 1\], got 1.5"),
        ({"aspect": 1.2}, "aspect"),
    ],
)
def test_config_rejects_bad_values(overrides: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PhantomConfig(**overrides)  # type: ignore[arg-type]


def test_generate_rejects_bad_worker_count(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workers must be at least 1 or None, got 0"):
        generate_phantoms(tmp_path, config=CONFIG, workers=0, progress=False)


def test_data_set_records_its_config_and_the_demo_refuses_other_phantoms(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """phantoms.json holds the config a data set was made with; `demo` reuses a folder only when it holds the
    demo's own phantoms, and otherwise says so instead of training on them."""
    from training.cli import main
    from training.phantoms import DEMO_PHANTOMS, written_config

    assert written_config(dataset.parent) == PhantomConfig(n_cases=3, height=160, seed=4)
    assert written_config(tmp_path) is None
    (tmp_path / "phantoms.json").write_text('{"n_cases": 0}')
    with pytest.raises(ValueError, match="phantoms.json is not a phantom config"):
        written_config(tmp_path)
    assert (DEMO_PHANTOMS.n_cases, DEMO_PHANTOMS.views_per_case, DEMO_PHANTOMS.height) == (120, 2, 640)
    out = tmp_path / "bundle"
    assert main(["-q", "demo", "--data", str(dataset.parent), "--out", str(out)]) == 2
    assert not out.exists()
    # The phantoms command sets how many cases are normal and how many findings the others have.
    made = tmp_path / "made"
    assert main(["-q", "phantoms", str(made), "--cases", "2", "--height", "96", "--normal-fraction", "0",
                 "--max-findings", "3", "--views", "2"]) == 0
    assert written_config(made) == PhantomConfig(n_cases=2, views_per_case=2, height=96, normal_fraction=0.0,
                                                 max_findings=3)
    # Two views: the CC and MLO of the breast with the findings, so every image of an abnormal case shows them.
    records = read_manifest(made / "manifest.csv")
    assert sorted((r.case_id, r.view) for r in records) == [(c, v) for c in ("P0000", "P0001") for v in ("CC", "MLO")]
    assert all(r.lesions for r in records)
    assert all(len({r.laterality for r in records if r.case_id == c}) == 1 for c in ("P0000", "P0001"))
    assert main(["-q", "phantoms", str(tmp_path / "five"), "--views", "5"]) == 2
    assert "views_per_case must be in 1..4, got 5" in capsys.readouterr().err
    assert not (tmp_path / "five").exists()
