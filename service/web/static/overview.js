// The overview page: how good the bundle's explanations are (quality.js), ranked units per class
// (count, coverage, annotation status) and the unit embedding as an SVG scatter plot whose points
// open the unit's survey.

import { getJSON, isMissingEndpoint, lexicon } from "./api.js";
import { showQuality } from "./quality.js";
import { announce, el, initSession, loadFailed } from "./session.js";
import { STATUS_TEXT, labelText, mainCategory, progress, status } from "./units.js";

// Okabe–Ito colours (distinguishable with common colour-vision deficiencies), then a few more.
const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8C6D1F", "#6A3D9A", "#B2182B", "#1B7837"];
const UNLABELLED = "#9AA1AB";
const STATUS_COLOURS = { expert: "#009E73", automatic: "#E69F00", none: UNLABELLED };
const SVG_NS = "http://www.w3.org/2000/svg";
const COLUMNS = ["Rank", "Unit", "Count", "Label", "Status"];

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

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

/** Colour of each point and the legend entries, for the chosen "colour by". */
function colouring(points, mode, categories) {
  const colourOf = new Map();
  if (mode === "status") {
    for (const [s, c] of Object.entries(STATUS_COLOURS)) colourOf.set(s, c);
    return { key: (p) => p.status, colourOf, legend: Object.keys(STATUS_COLOURS).map((s) => [STATUS_TEXT[s], STATUS_COLOURS[s]]) };
  }
  const keyOf = mode === "category" ? (p) => p.category : (p) => p.label;
  const values = mode === "category" ? categories : [...new Set(points.map(keyOf).filter(Boolean))].sort();
  values.forEach((v, i) => colourOf.set(v, i < PALETTE.length ? PALETTE[i] : `hsl(${(i * 47) % 360} 60% 40%)`));
  const shown = values.filter((v) => points.some((p) => keyOf(p) === v));
  return {
    key: keyOf,
    colourOf,
    legend: [...shown.map((v) => [v, colourOf.get(v)]), ["unlabelled / not ranked", UNLABELLED]],
  };
}

/** Points of the scatter plot: the embedding's units joined with what /units says about their labels. */
function embeddingPoints(embedding, unitsById) {
  return embedding.units.map((p) => {
    const known = unitsById.get(p.unit_id);
    const annotations = p.annotations || known?.annotations || [];
    let label = labelText(annotations);
    let category = mainCategory(annotations);
    // An embedding entry may carry its label directly instead of annotations.
    if (!label && typeof p.label === "string") label = p.label;
    if (!label && Array.isArray(p.labels) && p.labels.length) label = p.labels.map((l) => (typeof l === "string" ? l : l.label)).join(" / ");
    if (!category && typeof p.category === "string") category = p.category;
    return { id: p.unit_id, x: p.x, y: p.y, ranked: p.ranked ?? Boolean(known), label, category, status: status(annotations) };
  });
}

function drawScatter(container, legendList, points, mode, categories) {
  const W = 640;
  const H = 480;
  const pad = 24;
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x) => pad + ((x - x0) / (x1 - x0 || 1)) * (W - 2 * pad);
  const sy = (y) => H - pad - ((y - y0) / (y1 - y0 || 1)) * (H - 2 * pad);
  const { key, colourOf, legend } = colouring(points, mode, categories);
  const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "group", "aria-label": "Unit embedding scatter plot; each ranked unit is a link to its survey" });
  plot.append(svg("rect", { x: 0, y: 0, width: W, height: H, fill: "#fff" }));
  // Unranked units first and small, as a backdrop; ranked units on top, each a focusable link.
  const background = svg("g", { "aria-hidden": "true" });
  const links = svg("g");
  for (const p of [...points].sort((a, b) => Number(a.ranked) - Number(b.ranked))) {
    const colour = (p.ranked && colourOf.get(key(p))) || UNLABELLED;
    const title = `unit ${p.id}${p.label ? `: ${p.label}` : ""}${p.category ? ` (${p.category})` : ""}${p.ranked ? "" : ", not ranked"}`;
    const dot = svg("circle", { cx: sx(p.x).toFixed(1), cy: sy(p.y).toFixed(1), r: p.ranked ? 6 : 2.5, fill: colour, stroke: p.ranked ? "#1b1f24" : "none", "stroke-width": 1 });
    dot.append(svg("title", {}, title));
    if (p.ranked) {
      const link = svg("a", { href: `/ui/units/${p.id}`, "aria-label": title, "data-unit": p.id });
      link.append(dot);
      links.append(link);
    } else {
      background.append(dot);
    }
  }
  plot.append(background, links);
  container.replaceChildren(plot);
  legendList.replaceChildren(
    ...legend.map(([name, colour]) => el("li", {}, el("span", { class: "swatch", style: `background:${colour}`, "aria-hidden": "true" }), name)),
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
