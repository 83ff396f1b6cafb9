// The unit embedding as an SVG scatter plot (Lu & Perer): the overview draws every unit, coloured by
// label, category or status; the explanation viewer draws it again with the units a region query
// matched enlarged and outlined. Ranked units (and matched ones) are links to their survey.

import { el } from "./session.js";
import { STATUS_TEXT, labelText, mainCategory, status } from "./units.js";

// Okabe–Ito colours (distinguishable with common colour-vision deficiencies), then a few more.
const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8C6D1F", "#6A3D9A", "#B2182B", "#1B7837"];
const UNLABELLED = "#9AA1AB";
const STATUS_COLOURS = { expert: "#009E73", automatic: "#E69F00", none: UNLABELLED };
const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
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
export function embeddingPoints(embedding, unitsById) {
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

/** Draw `points` into `container` and its legend into `legendList`; units in `highlight` (ids) are enlarged and outlined. */
export function drawScatter(container, legendList, points, mode, categories, highlight = new Set()) {
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
  // Unranked units first and small, as a backdrop; ranked units on top, each a focusable link;
  // matched units last, enlarged and outlined, and links whether ranked or not.
  const background = svg("g", { "aria-hidden": "true" });
  const links = svg("g");
  const layer = (p) => (highlight.has(p.id) ? 2 : Number(p.ranked));
  for (const p of [...points].sort((a, b) => layer(a) - layer(b))) {
    const matched = highlight.has(p.id);
    const colour = (p.ranked && colourOf.get(key(p))) || UNLABELLED;
    const title =
      `unit ${p.id}${p.label ? `: ${p.label}` : ""}${p.category ? ` (${p.category})` : ""}${p.ranked ? "" : ", not ranked"}` +
      (matched ? ", matches the region" : "");
    const dot = svg("circle", {
      cx: sx(p.x).toFixed(1),
      cy: sy(p.y).toFixed(1),
      r: matched ? 10 : p.ranked ? 6 : 2.5,
      fill: colour,
      stroke: matched ? "#000" : p.ranked ? "#1b1f24" : "none",
      "stroke-width": matched ? 3 : 1,
      class: matched ? "matched" : "",
    });
    dot.append(svg("title", {}, title));
    if (p.ranked || matched) {
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
