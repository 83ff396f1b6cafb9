// The overview's "How good are these explanations?" panel: the bundle's explanation-quality report
// (GET /quality, figures computed by training/quality.py on mammograms with lesion masks), or one
// line saying the bundle has none and how to make one.

import { ApiError, getJSON, imageURL, isMissingEndpoint } from "./api.js";
import { el } from "./session.js";

const MAKE_ONE = "python -m training quality --bundle DIR --manifest CSV";
const BAR_NAMES = {
  auc_malignant: "Image-level AUC, malignant",
  auc_benign: "Image-level AUC, benign",
  lesion_images_predicted_correctly: "Lesion images predicted as their pathology",
  normal_images_predicted_normal: "Normal images predicted normal",
  pointing_game: "Pointing game",
  concept_named: "Lesion images named by a correct concept",
  background_max_lesion_probability: "Largest lesion probability outside the breast",
  lesion_ranked_units_named_by_lesion_concept: "Lesion-class ranked units named by a lesion concept",
};
// Figures that are not shares of images or units: shown as numbers, not percentages.
const NUMBER_FIGURES = new Set(["auc_malignant", "auc_benign", "background_max_lesion_probability"]);

const missing = "—";
const share = (x) => (x === null || x === undefined ? missing : `${(100 * x).toFixed(0)}%`);
const signed = (x) => `${x >= 0 ? "+" : ""}${x.toFixed(1)}`;
const number = (x) => (x === null || x === undefined ? missing : x.toFixed(3));
const of = (n, what) => el("span", { class: "muted" }, ` of ${n} ${what}`);

function table(name, caption, columns, rows) {
  const head = el("tr", {}, columns.map(([label, numeric]) => el("th", { scope: "col", class: numeric ? "num" : null }, label)));
  const body = el(
    "tbody",
    {},
    rows.map((cells) => el("tr", {}, cells.map((cell, i) => (i === 0 ? el("th", { scope: "row" }, cell) : el("td", { class: columns[i][1] ? "num" : null }, cell))))),
  );
  return el("table", { dataset: { table: name } }, el("caption", {}, caption), el("thead", {}, head), body);
}

function figure(name, term, ...value) {
  return el("div", { dataset: { figure: name } }, el("dt", {}, term), el("dd", {}, ...value));
}

function source(q) {
  const data = q.dataset || {};
  const manifest = typeof data.manifest === "string" ? data.manifest.split(/[\\/]/).pop() : null;
  const part = data.part === "test" ? "the test split of" : data.part === "all" ? "every image of" : data.part ? `part “${data.part}” of` : "";
  const where = manifest ? `${part} ${manifest}`.trim() : "an unnamed data set";
  const labels = data.labels ? ` · unit labels: ${data.labels}` : "";
  const rule = q.image_score_rule ? ` · image score: ${q.image_score_rule}` : "";
  return `Measured on ${where}: ${q.images} mammograms, ${q.lesion_images} with a lesion, ${q.normal_images} normal${labels}${rule}. Report: ${q.report}.`;
}

function figures(q) {
  const pg = q.pointing_game;
  const cn = q.concept_naming;
  const bg = q.background.max_probability || {};
  const tolerance = pg.tolerance_image_px === null || pg.tolerance_image_px === undefined ? "" : `, tolerance ${pg.tolerance_image_px.toFixed(1)} image px`;
  const lean = pg.peak_offset_input_px;
  const offset = !lean || lean.down === null || lean.down === undefined ? "" : ` · peak off the lesion centre by ${signed(lean.down)} down, ${signed(lean.right)} right (median, input px)`;
  return el(
    "dl",
    { class: "quality-figures" },
    figure("pointing_game", "Pointing game (CAM peak on the lesion)", el("strong", {}, share(pg.hit_rate)), of(pg.images, "lesion images"), el("span", { class: "muted" }, ` · chance ${share(pg.chance_rate)}${tolerance}${offset}`)),
    figure("lesion_images_correct", "Lesion images predicted as their pathology", el("strong", {}, share(q.predicted.lesion_images_correct)), of(q.lesion_images, "lesion images")),
    figure("normal_images_correct", "Normal images predicted normal", el("strong", {}, share(q.predicted.normal_images_correct)), of(q.normal_images, "normal images")),
    figure("concept_named", "Lesion images named by a correct concept", el("strong", {}, share(cn.named_rate)), of(cn.images, "lesion images")),
    figure(
      "ranked_units_named",
      "Ranked units named",
      el("strong", {}, share(cn.ranked_units_named)),
      of(cn.ranked_units ?? missing, "units"),
      el("span", { class: "muted" }, ` · lesion-class units named by a lesion concept ${share(cn.lesion_ranked_units_named_by_lesion_concept)} of ${cn.lesion_ranked_units ?? missing}`),
    ),
    figure(
      "background",
      "Largest probability outside the breast (normal images)",
      el("strong", {}, Object.entries(bg).map(([c, p]) => `${c} ${number(p)}`).join(" · ") || missing),
      of(q.background.images, "normal images"),
    ),
  );
}

function aucTable(q) {
  const classes = Object.keys(q.auc.score);
  return table(
    "auc",
    "Image-level AUC, one-vs-rest",
    [["Class"], ["Image score", true], ["Classifier probability", true], ["Image score, lesion images only", true]],
    classes.map((c) => [
      c, number(q.auc.score[c]), number(q.auc.classifier_probability[c]),
      number((q.auc.score_among_lesion_images || {})[c]),
    ]),
  );
}

function breakdown(name, caption, first, rows) {
  return table(
    name,
    caption,
    [[first], ["Images", true], ["Pointing game", true], ["Concept named", true], ["Predicted as its pathology", true]],
    Object.entries(rows).map(([key, r]) => [
      key, r.images, share(r.pointing_game), share(r.concept_named), share(r.predicted_as_pathology),
    ]),
  );
}

function barsTable(bars) {
  return table(
    "bars",
    "Bars",
    [["Figure"], ["Value", true], ["Bar"], ["Result"]],
    Object.entries(bars).map(([name, b]) => [
      BAR_NAMES[name] || name.replaceAll("_", " "),
      NUMBER_FIGURES.has(name) ? number(b.value) : share(b.value),
      b.bar,
      el("span", { class: `badge ${b.pass ? "pass" : "fail"}` }, b.pass ? "pass" : "fail"),
    ]),
  );
}

async function worstCases(url) {
  const img = el("img", { alt: "Missed lesion images: the CAM of the true class over each mammogram, the lesion outlined in white, the CAM's peak marked +." });
  const fig = el("figure", { class: "quality-worst" }, img, el("figcaption", { class: "hint" }, "Worst cases: lesion images where the CAM's peak missed the lesion."));
  try {
    img.src = await imageURL(url);
  } catch (error) {
    fig.replaceChildren(el("p", { class: "muted" }, `The worst-case figure could not be loaded: ${error.advice || error.message}`));
  }
  return fig;
}

function line(text, ...children) {
  return el("p", { class: "quality-line" }, text, ...children);
}

/** Fill `container` with the report, or one line saying why there is none. */
export async function showQuality(container) {
  let q;
  try {
    q = await getJSON("/quality");
  } catch (error) {
    if (error instanceof ApiError && error.code === "no_quality_report") {
      container.replaceChildren(line("This bundle has no explanation-quality report; make one with ", el("code", {}, MAKE_ONE), " on a manifest with lesion masks."));
    } else if (isMissingEndpoint(error)) {
      container.replaceChildren(line("This service has no explanation-quality endpoint (GET /quality)."));
    } else {
      if (error.status === 401 || error.status === 403) document.body.dataset.authFailed = "true";
      container.replaceChildren(line(`The explanation-quality report could not be loaded: ${error.advice || error.message}`));
    }
    return false;
  }
  const parts = [
    el("p", { class: "hint", id: "quality-source" }, source(q)),
    el(
      "div",
      { class: "quality-grid" },
      figures(q),
      aucTable(q),
      breakdown("per_category", "Per BI-RADS category", "Category", q.per_category || {}),
      q.bars ? barsTable(q.bars) : null,
    ),
  ];
  if (q.per_concept && Object.keys(q.per_concept).length) {
    parts.push(el("details", {}, el("summary", {}, "Per concept"), breakdown("per_concept", "Per finding concept", "Concept", q.per_concept)));
  }
  container.replaceChildren(...parts);
  if (q.figure_url) container.append(await worstCases(q.figure_url));
  return true;
}
