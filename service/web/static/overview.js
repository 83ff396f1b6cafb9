// The overview page: how good the bundle's explanations are (quality.js), ranked units per class
// (count, coverage, annotation status) and the unit embedding as an SVG scatter plot whose points
// open the unit's survey.

import { getJSON, isMissingEndpoint, lexicon } from "./api.js";
import { showQuality } from "./quality.js";
import { drawScatter, embeddingPoints } from "./scatter.js";
import { announce, el, initSession, loadFailed } from "./session.js";
import { STATUS_TEXT, labelText, progress, status } from "./units.js";

const COLUMNS = ["Rank", "Unit", "Count", "Label", "Status"];

const pct = (x) => `${(100 * x).toFixed(2)}%`;

/** One class's ranked units: a heading with the coverage, then a table. */
function classPanel(name, units, coverage) {
  const ranked = units.filter((u) => name in u.ranks).sort((a, b) => a.ranks[name] - b.ranks[name]);
  const cov = coverage[name];
  const summary = cov ? `coverage ${pct(cov.coverage)} of ${cov.slots_total} slots · ${ranked.length} units` : `${ranked.length} units`;
  const body = el("tbody");
  for (const u of ranked) {
    const s = status(u.annotations);
    body.append(
      el(
        "tr",
        { dataset: { unit: u.unit_id } },
        el("td", { class: "num" }, u.ranks[name]),
        el("td", {}, el("a", { href: `/ui/units/${u.unit_id}` }, `unit ${u.unit_id}`)),
        el("td", { class: "num" }, u.counts[name] ?? ""),
        el("td", {}, labelText(u.annotations) || el("span", { class: "muted" }, "—")),
        el("td", {}, el("span", { class: `badge ${s}` }, STATUS_TEXT[s])),
      ),
    );
  }
  const head = el("tr", {}, COLUMNS.map((h) => el("th", { scope: "col", class: h === "Rank" || h === "Count" ? "num" : null }, h)));
  return el(
    "section",
    { class: "panel", "aria-labelledby": `class-${name}` },
    el("h3", { id: `class-${name}` }, `${name} `, el("span", { class: "muted" }, summary)),
    el("table", { dataset: { class: name } }, el("caption", { class: "visually-hidden" }, `Units ranked for ${name}, ${summary}`), el("thead", {}, head), body),
  );
}

async function main() {
  initSession();
  // Independent of the units: loads beside them and fills its own panel.
  showQuality(document.getElementById("quality-body"));
  const tables = document.getElementById("class-tables");
  let overview;
  try {
    overview = await getJSON("/units");
  } catch (error) {
    loadFailed(error, "Could not load the units");
    return;
  }
  const done = progress(overview.units, null);
  document.getElementById("model-line").textContent =
    `Model ${overview.model_id} · ${overview.num_images} hold-out images · top ${overview.top_per_image} units per image, ` +
    `${overview.top_per_class} per class · ${done.labelled} of ${done.total} ranked units labelled by experts`;
  tables.replaceChildren(...overview.classes.map((name) => classPanel(name, overview.units, overview.coverage)));

  const scatter = document.getElementById("scatter");
  const legend = document.getElementById("legend");
  const select = document.getElementById("colour-by");
  let embedding;
  try {
    embedding = await getJSON("/units/embedding");
  } catch (error) {
    // Before GET /units/embedding existed, "/units/embedding" reached /units/{unit_id} and failed as a bad id.
    const missing = isMissingEndpoint(error) || (error.status === 422 && error.field === "unit_id");
    scatter.replaceChildren(el("p", { class: "muted" }, missing ? "This service has no unit embedding endpoint (GET /units/embedding)." : `The unit embedding could not be loaded: ${error.advice || error.message}`));
    announce("Units loaded; no embedding.");
    return;
  }
  if (embedding.method) document.getElementById("embedding-method").textContent = `${embedding.method}. Select a point to open its survey.`;
  const unitsById = new Map(overview.units.map((u) => [u.unit_id, u]));
  const points = embeddingPoints(embedding, unitsById);
  const { categories } = await lexicon();
  const draw = () => drawScatter(scatter, legend, points, select.value, categories);
  select.addEventListener("change", draw);
  draw();
  announce(`${overview.units.length} ranked units and ${points.length} embedded units loaded.`);
}

main();
