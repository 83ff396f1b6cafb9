"""The explanation-quality report as files: ``quality.json``, ``quality.md`` and the worst cases' figure."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from training.quality.figures import NAMED_UNITS, QUALITY_FIGURE, QUALITY_JSON, QUALITY_MARKDOWN, QualityReport, _Case


def write_report(report: QualityReport, out_dir: Path, *, title: str) -> list[Path]:
    """Write ``quality.json``, ``quality.md`` and the worst-case figure under ``out_dir``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / Path(QUALITY_JSON).name
    json_path.write_text(json.dumps(report.to_json(), indent=1) + "\n")
    md_path = out_dir / Path(QUALITY_MARKDOWN).name
    md_path.write_text(markdown(report.figures, title=title, figure=Path(QUALITY_FIGURE).name if report.worst else None))
    paths = [json_path, md_path]
    if report.worst:
        paths.append(_plot_worst(report.worst, out_dir / Path(QUALITY_FIGURE).name))
    return paths


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def _offset(v: Mapping[str, Any] | None) -> str:
    if not v or v.get("down") is None:
        return "–"
    return f"({v['down']:+.1f}, {v['right']:+.1f})"


def markdown(figures: Mapping[str, Any], *, title: str, figure: str | None = None) -> str:
    """The report as a short Markdown page."""
    pg = figures["pointing_game"]
    cn = figures["concept_naming"]
    auc = figures["auc"]
    lines = [
        f"# Explanation quality: {title}",
        "",
        f"{figures['images']} images ({figures['lesion_images']} with a lesion, {figures['normal_images']} normal) "
        f"from `{figures['dataset'].get('manifest', '?')}` ({figures['dataset'].get('part', 'all images')}). "
        f"Image-level score: `{figures['image_score_rule']}` (deepminer/scoring.py).",
        "",
        "| figure | value |",
        "| --- | ---: |",
    ]
    for c, v in auc["score"].items():
        lines.append(f"| image AUC {c}, from the score / classifier probability | {_num(v)} / "
                     f"{_num(auc['classifier_probability'].get(c))} |")
    for c, v in auc.get("score_among_lesion_images", {}).items():
        lines.append(f"| image AUC {c} among lesion images, from the score | {_num(v)} |")
    pred = figures["predicted"]
    lines += [
        f"| lesion images predicted as their pathology | {_pct(pred['lesion_images_correct'])} |",
        f"| normal images predicted normal | {_pct(pred['normal_images_correct'])} |",
        f"| pointing game (chance), tolerance {pg['tolerance_image_px']} image px | {_pct(pg['hit_rate'])} "
        f"({_pct(pg['chance_rate'])}) |",
        f"| CAM peak minus the nearest lesion's centre, median (down, right), input px | "
        f"{_offset(pg.get('peak_offset_input_px'))} |",
        f"| lesion images named by a correct concept among the first {NAMED_UNITS} named units | "
        f"{_pct(cn['named_rate'])} |",
        f"| ranked units with a name | {_pct(cn['ranked_units_named'])} |",
        f"| lesion classes' ranked units named by a lesion concept | "
        f"{_pct(cn['lesion_ranked_units_named_by_lesion_concept'])} |",
    ]
    for c, v in figures["background"]["max_probability"].items():
        lines.append(f"| largest {c} probability outside the breast, normal images | {_num(v)} |")
    lines += ["", "| concept | images | pointing game | named | predicted as its pathology |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for group in ("per_category", "per_concept"):
        for name, t in figures[group].items():
            lines.append(f"| {name} | {t['images']} | {_pct(t['pointing_game'])} | {_pct(t['concept_named'])} | "
                         f"{_pct(t.get('predicted_as_pathology'))} |")
    if "bars" in figures:
        lines += ["", "| bar | value | required | |", "| --- | ---: | ---: | --- |"]
        for name, b in figures["bars"].items():
            value = b["value"]
            lines.append(f"| {name} | {'–' if value is None else f'{value:.3f}'} | {b['bar']} | "
                         f"{'pass' if b['pass'] else '**fail**'} |")
    if figure:
        lines += ["", f"![Missed images: CAM of the true class, lesion outlined, peak marked]({figure})"]
    return "\n".join(lines) + "\n"


def _plot_worst(cases: Sequence[_Case], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepminer.grid import upsample

    cols = min(4, len(cases))
    rows = (len(cases) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, case in zip(axes.flat, cases):
        ax.imshow(case.pixels, cmap="gray")
        ax.imshow(upsample(case.cam, case.mapping), cmap="jet", alpha=0.35)
        ax.contour(case.lesion, levels=[0.5], colors="white", linewidths=0.8)
        ax.plot(case.peak[1], case.peak[0], "w+", markersize=12, markeredgewidth=2)
        ax.set_title(f"{case.image_id} ({case.explained})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
