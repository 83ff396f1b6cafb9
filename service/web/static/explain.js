// The explanation viewer: upload a mammogram, read its explanation first (up to five labelled units
// among the top eight, one sentence each), then see the CAM over it (opacity control), the image-level
// class scores (the patch classifier's probabilities beside them) and probability maps, the top-k
// units with their labels and influence; draw a
// region to find the units whose maps match it, and label those units as a group. Opened as
// `?suspicious=<id>` (the suspicious patches page), it explains that patch's mammogram for the patch's
// class and runs the region query on the patch.
//
// Showing the image: the server returns maps, not pixels, so the page decodes the upload itself.
// PNG and JPEG are decoded by the browser; uncompressed DICOM by dicom.js. Anything else (compressed
// DICOM, TIFF) is shown through the server's own PNG overlay of the CAM (`?overlays=png`), which
// blends the CAM into a grayscale copy of the image; the page's overlay then sits on top of it.

import { ApiError, getAnnotator, getJSON, lexicon, request } from "./api.js";
import { dicomToImageData } from "./dicom.js";
import { drawMap, mapThumbnail } from "./maps.js";
import { RegionDrawer } from "./region.js";
import { drawScatter, embeddingPoints } from "./scatter.js";
import { announce, clearAlert, el, initSession, loadFailed, showAlert, showError } from "./session.js";
import { labelText, status, STATUS_TEXT } from "./units.js";
import { offerLabels } from "./vocabulary.js";

// What each image-score rule (the response's `score_rule`, deepminer/scoring.py) ranks by.
const SCORE_RULES = {
  breast_peak:
    "each lesion class scores the peak of its probability map over the breast, normal the lowest value of its map there",
  classifier: "the patch classifier's probabilities on the whole image (softmax of the mean of the logit map)",
  patch_peak:
    "every class scores the patch classifier's probability at the most suspicious patch of the breast " +
    "(the patch-sized block of the logit map least likely normal)",
  worst_patch:
    "every class scores the patch classifier's probability at the worst patch of the breast " +
    "(of the patch-sized blocks classified as the most severe class found, malignant before benign, the one most likely of it)",
};

const percent = (v) => `${(100 * v).toFixed(1)}%`;

// What to do about the upload errors /explain names; the service's own message follows.
const UPLOAD_HINTS = {
  unsupported_media_type: "choose a DICOM, PNG, JPEG or TIFF mammogram",
  unsupported_dicom: "this kind of DICOM is not explained: export a single-frame grayscale image",
  no_pixel_data: "this DICOM file holds no image",
  corrupt_image: "the file is damaged or incomplete",
  empty_upload: "the file is empty",
  upload_too_large: "the file is larger than the service accepts",
  image_too_large: "the image has more pixels than the service accepts",
  busy: "the service is busy; try again in a moment",
  inference_timeout: "the service took too long; try again",
};

const DISPLAY_MAX_SIDE = 1024; // canvas pixels on the image's longer side
const $ = (id) => document.getElementById(id);

const state = {
  file: null,
  result: null,
  overlays: null, // server PNG overlays when the browser could not decode the image
  selected: "cam",
  drawer: null,
  matches: [],
  wholeImage: false, // whether the last region query covered the whole image
  embedding: null, // the unit embedding's points, read on the first region query (null: not yet or none)
  reloadLabels: null, // re-reads the label suggestions of the group form
};

// -- the image ------------------------------------------------------------------

function isDicom(bytes, name) {
  const magic = bytes.length >= 132 && String.fromCharCode(...bytes.slice(128, 132)) === "DICM";
  return magic || /\.(dcm|dicom)$/i.test(name);
}

/** The upload as something drawImage() accepts, or null when this browser cannot decode it. */
async function decodeLocally(file) {
  const buffer = await file.arrayBuffer();
  if (isDicom(new Uint8Array(buffer, 0, Math.min(132, buffer.byteLength)), file.name)) {
    const data = dicomToImageData(buffer);
    if (!data) return null;
    const canvas = new OffscreenCanvas(data.width, data.height);
    canvas.getContext("2d").putImageData(data, 0, 0);
    return canvas;
  }
  try {
    return await createImageBitmap(file);
  } catch {
    return null;
  }
}

/** CSS size of the image: as large as the column and most of the window allow, aspect kept. */
function fitStage() {
  const canvas = $("image-canvas");
  if (!state.result) return;
  const [h, w] = state.result.image.shape;
  const room = $("stage").parentElement.clientWidth;
  const f = Math.min(room / w, (0.78 * window.innerHeight) / h);
  canvas.style.width = `${Math.round(w * f)}px`;
  canvas.style.height = `${Math.round(h * f)}px`;
}

/** Canvas pixels: the displayed size at the screen's density, at most DISPLAY_MAX_SIDE on the longer side. */
function canvasSize([h, w]) {
  const room = $("stage").parentElement.clientWidth;
  const shown = Math.min(room / w, (0.78 * window.innerHeight) / h) * (window.devicePixelRatio || 1);
  const f = Math.min(shown, DISPLAY_MAX_SIDE / Math.max(h, w));
  return [Math.max(1, Math.round(h * f)), Math.max(1, Math.round(w * f))];
}

async function drawBase(source, shape) {
  const canvas = $("image-canvas");
  const [h, w] = canvasSize(shape);
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  if (source) {
    ctx.drawImage(source, 0, 0, w, h);
    return;
  }
  const img = new Image();
  img.src = `data:image/png;base64,${state.overlays.cam}`;
  await img.decode();
  ctx.drawImage(img, 0, 0, w, h);
}

function selectedMap() {
  const r = state.result;
  if (state.selected === "cam") return { map: r.cam, range: null };
  if (state.selected.startsWith("prob:")) return { map: r.probability_maps[state.selected.slice(5)], range: [0, 1] };
  if (state.selected.startsWith("unit:")) {
    const unit = r.units.find((u) => String(u.unit_id) === state.selected.slice(5));
    return unit ? { map: unit.activation_map, range: null } : null;
  }
  return null;
}

function drawOverlay() {
  const canvas = $("overlay-canvas");
  const base = $("image-canvas");
  canvas.width = base.width;
  canvas.height = base.height;
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  const chosen = selectedMap();
  if (chosen) drawMap(canvas, chosen.map, { range: chosen.range });
  canvas.style.opacity = String($("opacity").value / 100);
  for (const li of $("units").children) li.classList.toggle("selected", state.selected === `unit:${li.dataset.unit}`);
}

function select(value) {
  state.selected = value;
  $("overlay-select").value = value;
  drawOverlay();
}

// -- rendering the explanation ----------------------------------------------------

function unitLabel(unit) {
  return labelText(unit.annotations) || "unlabelled";
}

/** The response's `explanation`: one sentence per named unit, as the service wrote it, and what was admitted. */
function renderExplanation() {
  const r = state.result;
  const x = r.explanation;
  const kinds = x.sources.includes("automatic") ? "expert or automatic labels (automatic ones marked)" : "expert labels";
  $("explanation-intro").textContent = x.units.length
    ? `Up to ${x.max_units} units among the ${x.considered} most influential for ${r.explained_class} that carry ${kinds} of this model, most influential first.`
    : `None of the ${x.considered} most influential units for ${r.explained_class} carries ${kinds} of this model that name what they show.`;
  const shown = new Set(r.units.map((u) => u.unit_id));
  $("explanation-units").replaceChildren(
    ...x.units.map((u) =>
      el(
        "li",
        { dataset: { unit: u.unit_id } },
        el("span", { class: "sentence" }, u.text),
        " ",
        u.labels.some((l) => l.automatic) ? [el("span", { class: "badge automatic" }, "automatic label"), " "] : null,
        shown.has(u.unit_id)
          ? el("button", { type: "button", "aria-label": `Show unit ${u.unit_id}'s map over the image`, onclick: () => select(`unit:${u.unit_id}`) }, "show map")
          : el("a", { href: `/ui/units/${u.unit_id}` }, "unit page"),
      ),
    ),
  );
}

function renderOverlayChoices() {
  const r = state.result;
  const options = [
    el("option", { value: "cam" }, `CAM of ${r.explained_class}`),
    ...r.classes.map((c) => el("option", { value: `prob:${c}` }, `Probability map: ${c}`)),
    ...r.units.map((u) => el("option", { value: `unit:${u.unit_id}` }, `Unit ${u.unit_id} (#${u.rank}): ${unitLabel(u)}`)),
    el("option", { value: "none" }, "No overlay"),
  ];
  $("overlay-select").replaceChildren(...options);
  $("overlay-select").value = state.selected;
}

function renderScores() {
  const r = state.result;
  $("prediction").replaceChildren(
    "Predicted ",
    el("strong", {}, r.predicted_class),
    r.explained_class !== r.predicted_class ? `; explaining ${r.explained_class}` : "",
    ".",
  );
  $("scores").replaceChildren(
    ...r.classes.map((c) => {
      const s = r.scores[c];
      const p = r.classifier_probabilities[c];
      return el(
        "li",
        { dataset: { class: c } },
        el("span", {}, c === r.predicted_class ? el("strong", {}, c) : c),
        el("span", { class: "bar", role: "presentation" }, el("span", { style: `width:${(100 * s).toFixed(1)}%` })),
        el("span", { class: "num score" }, percent(s)),
        el("span", { class: "hint classifier" }, `classifier ${percent(p)}`),
      );
    }),
  );
  $("score-rule").replaceChildren(
    "Scores by rule ",
    el("code", {}, r.score_rule),
    `: ${SCORE_RULES[r.score_rule] ?? "see the model bundle"}; the predicted class has the highest score. `,
    "Classifier: the patch classifier's probability, the mean over the whole image, which a small lesion barely moves.",
  );
  $("prob-maps").replaceChildren(
    ...r.classes.map((c) => {
      const thumb = mapThumbnail(r.probability_maps[c], { range: [0, 1], label: `Probability map of ${c}` });
      const peak = r.peak_probabilities?.[c];
      return el(
        "figure",
        {},
        el("button", { type: "button", class: "thumb-button", "aria-label": `Show the probability map of ${c} over the image`, onclick: () => select(`prob:${c}`) }, thumb),
        el("figcaption", {}, c, peak !== undefined ? ` · peak ${(100 * peak).toFixed(0)}%` : ""),
      );
    }),
  );
}

function renderUnits() {
  const r = state.result;
  const matched = new Set(state.matches.map((m) => m.unit_id));
  $("units").replaceChildren(
    ...r.units.map((u) => {
      const s = status(u.annotations);
      const thumb = mapThumbnail(u.activation_map, { size: 72, label: `Activation map of unit ${u.unit_id}` });
      return el(
        "li",
        { dataset: { unit: u.unit_id }, class: matched.has(u.unit_id) ? "match" : null },
        el("button", { type: "button", class: "thumb-button", "aria-label": `Show unit ${u.unit_id}'s map over the image`, onclick: () => select(`unit:${u.unit_id}`) }, thumb),
        el(
          "div",
          {},
          el("strong", {}, `#${u.rank} `, el("a", { href: `/ui/units/${u.unit_id}` }, `unit ${u.unit_id}`)),
          " ",
          el("span", { class: `badge ${s}` }, STATUS_TEXT[s]),
          matched.has(u.unit_id) ? el("span", { class: "badge expert" }, " matches region") : null,
          el("br"),
          labelText(u.annotations) ? [el("span", { class: "unit-label" }, labelText(u.annotations)), el("br")] : null,
          el("span", { class: "hint" }, `influence ${u.influence.toFixed(3)} · max activation ${u.max_activation.toFixed(3)} · weight ${u.weight.toFixed(4)}`),
        ),
      );
    }),
  );
}

function render() {
  const r = state.result;
  $("result").hidden = false;
  fitStage();
  renderExplanation();
  renderOverlayChoices();
  renderScores();
  renderUnits();
  drawOverlay();
  const dicom = r.image.dicom;
  const source = state.overlays ? " Shown through the server's CAM overlay: this browser cannot decode this file's pixels." : "";
  $("image-line").textContent =
    `${r.image.format}, ${r.image.shape[1]}×${r.image.shape[0]} pixels, ${r.image.bits} bit` +
    (dicom ? `, ${[dicom.laterality, dicom.view].filter(Boolean).join(" ")}` : "") +
    `; network input ${r.image.network_input_shape[1]}×${r.image.network_input_shape[0]}. Model ${r.model.id}.${source}`;
}

// -- upload -------------------------------------------------------------------------

async function explain(event) {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) {
    showAlert("Choose a mammogram file first (DICOM, PNG, JPEG or TIFF).");
    $("file").focus();
    return;
  }
  if (file.size === 0) {
    showAlert(`Upload failed: “${file.name}” is empty.`);
    return;
  }
  await explainFile(file);
}

/** Explain `file` and show it; resolves to whether it was explained (an error is shown otherwise). */
async function explainFile(file) {
  clearAlert();
  $("explain-button").disabled = true;
  announce(`Explaining ${file.name}…`);
  try {
    const local = await decodeLocally(file);
    const params = new URLSearchParams({ top_k: $("top-k").value || "8" });
    if ($("class-name").value) params.set("class_name", $("class-name").value);
    if (!local) params.set("overlays", "png");
    const body = new FormData();
    body.append("file", file);
    const result = await (await request(`/explain?${params}`, { method: "POST", body })).json();
    state.file = file;
    state.result = result;
    state.overlays = local ? null : result.overlays || null;
    state.matches = [];
    state.selected = "cam";
    if (!local && !state.overlays) throw new Error("this browser cannot decode the image and the service sent no overlay to show it");
    $("result").hidden = false;
    await drawBase(local, result.image.shape);
    state.drawer.reset(result.image.shape[0], result.image.shape[1]);
    $("region-results").hidden = true;
    render();
    const t = result.timings_ms?.total;
    announce(`Explained ${file.name}: ${result.predicted_class} (score ${percent(result.scores[result.predicted_class])})${t ? ` in ${t.toFixed(0)} ms` : ""}.`);
    return true;
  } catch (error) {
    const hint = error instanceof ApiError ? UPLOAD_HINTS[error.code] : null;
    showError(error, `Upload failed for “${file.name}”${hint ? ` (${hint})` : ""}`);
    announce("");
    return false;
  } finally {
    $("explain-button").disabled = false;
  }
}

// -- region query and group labelling --------------------------------------------------

/** The whole uploaded image as a polygon: its outer pixel edges (pixel centres at whole numbers). */
function wholeImage() {
  const [h, w] = state.result.image.shape;
  return [[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]];
}

/** The region query on the drawn region, or with `whole` on the whole image (its label report, with no region drawn). */
async function runRegion(whole = false) {
  const polygon = whole ? wholeImage() : state.drawer.polygon();
  if (!polygon || !state.file) return;
  state.wholeImage = whole;
  $("run-region").disabled = true;
  $("run-whole-image").disabled = true;
  announce(whole ? "Reporting the labels over the whole image…" : "Finding the units whose maps match the region…");
  try {
    const body = new FormData();
    body.append("file", state.file);
    body.append("polygon", JSON.stringify(polygon));
    const result = await (await request("/query/region", { method: "POST", body })).json();
    state.matches = result.units;
    renderRegion(result);
    renderRegionPair(result, polygon);
    renderUnits();
    await renderMatchedEmbedding(result.units.map((u) => u.unit_id));
    announce(`${result.units.length} unit${result.units.length === 1 ? "" : "s"} match the region (IoU ≥ ${result.min_iou}).`);
  } catch (error) {
    showError(error, "Region query failed");
  } finally {
    $("run-region").disabled = !state.drawer.polygon();
    $("run-whole-image").disabled = false;
  }
}

function renderRegion(result) {
  const section = $("region-results");
  section.hidden = false;
  const rows = result.units.map((u) =>
    el(
      "tr",
      { dataset: { unit: u.unit_id } },
      el("td", {}, el("input", { type: "checkbox", checked: true, value: u.unit_id, "aria-label": `Select unit ${u.unit_id}` })),
      el("td", {}, el("a", { href: `/ui/units/${u.unit_id}` }, `unit ${u.unit_id}`)),
      el("td", { class: "num" }, u.iou.toFixed(3)),
      el("td", {}, labelText(u.annotations) || el("span", { class: "muted" }, "unlabelled")),
    ),
  );
  $("region-rows").replaceChildren(...rows);
  if (!rows.length) $("region-rows").append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, `No unit's map overlaps the region by IoU ≥ ${result.min_iou}. Try a larger or different region.`)));
  $("region-summary").textContent = state.wholeImage
    ? "Region: the whole image."
    : `Region: ${(100 * result.region.fraction).toFixed(1)}% of the image.`;
  renderLabelReport(result.labels || []);
  $("group-save").disabled = !rows.length || !result.units.length;
  $("region-heading").focus();
}

const PAIR_SIDE = 220; // canvas pixels on the longer side of each picture of the region pair

/** Side by side: the region of the image, and the best-matching unit's map over the same region. */
function renderRegionPair(result, polygon) {
  const pair = $("region-pair");
  const best = result.units[0];
  pair.hidden = !best || !result.best_unit_map;
  if (pair.hidden) return;
  const base = $("image-canvas");
  const [h, w] = state.result.image.shape;
  const f = base.width / w;
  // The polygon's bounding box in canvas pixels (its points are pixel centres; pixel edges lie half a pixel out).
  const xs = polygon.map(([x]) => x);
  const ys = polygon.map(([, y]) => y);
  const x0 = Math.max(0, (Math.min(...xs) + 0.5) * f);
  const y0 = Math.max(0, (Math.min(...ys) + 0.5) * f);
  const cw = Math.max(1, Math.min(base.width, (Math.max(...xs) + 0.5) * f) - x0);
  const ch = Math.max(1, Math.min(base.height, (Math.max(...ys) + 0.5) * f) - y0);
  const s = PAIR_SIDE / Math.max(cw, ch);
  const overlay = document.createElement("canvas");
  overlay.width = base.width;
  overlay.height = base.height;
  drawMap(overlay, result.best_unit_map);
  const draw = (canvas, withMap) => {
    canvas.width = Math.max(1, Math.round(cw * s));
    canvas.height = Math.max(1, Math.round(ch * s));
    const ctx = canvas.getContext("2d");
    ctx.drawImage(base, x0, y0, cw, ch, 0, 0, canvas.width, canvas.height);
    if (withMap) {
      ctx.globalAlpha = 0.6;
      ctx.drawImage(overlay, x0, y0, cw, ch, 0, 0, canvas.width, canvas.height);
      ctx.globalAlpha = 1;
    }
    // The region's outline, in the picture's pixels.
    ctx.strokeStyle = "#ffd400";
    ctx.lineWidth = 2;
    ctx.beginPath();
    polygon.forEach(([x, y], i) => ctx[i ? "lineTo" : "moveTo"](((x + 0.5) * f - x0) * s, ((y + 0.5) * f - y0) * s));
    ctx.closePath();
    ctx.stroke();
  };
  draw($("region-crop"), false);
  draw($("region-best"), true);
  $("region-best-caption").textContent = `Unit ${best.unit_id}'s map over it (best match, IoU ${best.iou.toFixed(3)})`;
}

/** The unit embedding with the matched units enlarged and outlined; the bundle may have no embedding. */
async function renderMatchedEmbedding(ids) {
  const hint = $("region-embedding-hint");
  try {
    if (!state.embedding) {
      const [embedding, overview, vocabulary] = await Promise.all([getJSON("/units/embedding"), getJSON("/units"), lexicon()]);
      const ranked = new Map(overview.units.map((u) => [u.unit_id, u]));
      state.embedding = { points: embeddingPoints(embedding, ranked), categories: vocabulary.categories };
    }
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) throw error;
    $("region-scatter").replaceChildren();
    $("region-legend").replaceChildren();
    hint.textContent = "The model bundle has no unit embedding to show the matched units in.";
    return;
  }
  drawScatter($("region-scatter"), $("region-legend"), state.embedding.points, "category", state.embedding.categories, new Set(ids));
  hint.textContent = ids.length
    ? `The ${ids.length} matched unit${ids.length === 1 ? "" : "s"}, enlarged and outlined among every unit of the model, coloured by the BI-RADS category of their label.`
    : "No unit matched, so none is outlined among the units of the model.";
}

/** Lu & Perer's label report as bar charts: per label, its units' mean max activation and mean IoU on this image. */
function renderLabelReport(reports) {
  const top = Math.max(0, ...reports.map((l) => l.mean_max_activation));
  const bar = (kind, value, width, text) =>
    el(
      "div",
      { class: `label-bar ${kind}` },
      el("span", { class: "hint" }, kind === "activation" ? "mean max activation" : "mean IoU"),
      el("span", { class: "bar", role: "presentation" }, el("span", { style: `width:${(100 * width).toFixed(1)}%` })),
      el("span", { class: "num value" }, text),
    );
  $("label-bars").replaceChildren(
    ...reports.map((l) =>
      el(
        "li",
        { dataset: { label: l.label } },
        el("strong", {}, l.label),
        el("span", { class: "hint" }, ` · ${l.unit_ids.length} unit${l.unit_ids.length === 1 ? "" : "s"}`),
        bar("activation", l.mean_max_activation, top > 0 ? Math.max(0, l.mean_max_activation) / top : 0, l.mean_max_activation.toFixed(2)),
        bar("iou", l.mean_iou, l.mean_iou, l.mean_iou.toFixed(3)),
      ),
    ),
  );
  $("label-report-hint").textContent = reports.length
    ? `Every label of this model's units, highest mean IoU with ${state.wholeImage ? "the whole image" : "the region"} first. ` +
      "Activation bars are scaled to the largest mean; IoU bars run from 0 to 1."
    : "No unit of this model carries a label yet, so there is nothing to report.";
}

async function labelGroup(event) {
  event.preventDefault();
  const ids = [...$("region-rows").querySelectorAll("input[type=checkbox]:checked")].map((c) => Number(c.value));
  const label = $("group-label").value.trim();
  const category = $("group-category").value;
  const problems = [];
  if (!ids.length) problems.push("Select at least one unit.");
  if (!label) problems.push("Give a short label.");
  if (!category) problems.push("Choose a BI-RADS lexicon category.");
  if (problems.length) {
    showAlert(problems.join(" "));
    (!label ? $("group-label") : !category ? $("group-category") : $("region-rows").querySelector("input"))?.focus();
    return;
  }
  const name = getAnnotator();
  const annotations = ids.map((unit_id) => ({
    unit_id,
    label,
    category,
    cancer_association: $("group-association").value,
    description: $("group-description").value,
    ...(name ? { annotator: name } : {}),
  }));
  $("group-save").disabled = true;
  try {
    const saved = await (await request("/units/batch", { method: "POST", json: { annotations } })).json();
    clearAlert();
    await Promise.all([refreshLabels(ids), state.reloadLabels()]);
    state.embedding = null; // its colours follow the labels: read it again on the next query
    announce(`Labelled ${saved.annotations.length} unit${saved.annotations.length === 1 ? "" : "s"} as “${label}”.`);
  } catch (error) {
    showError(error, "The units were not labelled");
  } finally {
    $("group-save").disabled = false;
  }
}

/** Re-read the labels of the listed units and redraw where they appear. */
async function refreshLabels(ids) {
  const wanted = new Set([...ids, ...state.result.units.map((u) => u.unit_id)]);
  const fresh = new Map(await Promise.all([...wanted].map(async (id) => [id, await getJSON(`/units/${id}`)])));
  for (const u of state.result.units) if (fresh.has(u.unit_id)) u.annotations = fresh.get(u.unit_id).annotations;
  for (const m of state.matches) if (fresh.has(m.unit_id)) m.annotations = fresh.get(m.unit_id).annotations;
  for (const row of $("region-rows").querySelectorAll("tr[data-unit]")) {
    const unit = fresh.get(Number(row.dataset.unit));
    if (unit) row.lastElementChild.textContent = labelText(unit.annotations) || "unlabelled";
  }
  renderOverlayChoices();
  renderUnits();
}

// -- a suspicious patch (suspicious.js links here with ?suspicious=<id>) -----------------------

/** Explain the mammogram of one of the bundle's suspicious patches for its class, and query the patch's region. */
async function openSuspicious(id) {
  let patch;
  let file;
  try {
    const { patches } = await getJSON("/suspicious-patches");
    patch = patches.find((p) => p.id === id);
    if (!patch) {
      showAlert(`The model bundle lists no suspicious patch “${id}”; choose one on the suspicious patches page.`);
      return;
    }
    const blob = await (await request(patch.image.url)).blob();
    file = new File([blob], `${patch.image_id}.png`, { type: "image/png" });
  } catch (error) {
    showError(error, "Could not load the suspicious patch");
    return;
  }
  $("class-name").value = patch.class;
  $("suspicious-line").hidden = false;
  $("suspicious-line").replaceChildren(
    `Suspicious patch: ${patch.class} #${patch.rank} (probability ${percent(patch.probability)}) of hold-out image ${patch.image_id}, `,
    "as the network saw it. ",
    el("a", { href: "/ui/suspicious" }, "All suspicious patches"),
  );
  if (!(await explainFile(file))) return;
  const b = patch.context_box;
  state.drawer.setRectangle(b.left, b.top, b.left + b.width, b.top + b.height);
  await runRegion(false);
}

// -- start ------------------------------------------------------------------------------

async function main() {
  initSession();
  state.drawer = new RegionDrawer($("region-svg"), (points) => ($("run-region").disabled = !points));
  $("upload-form").addEventListener("submit", explain);
  $("explain-button").disabled = false; // the HTML ships it disabled until this handler is in place
  window.addEventListener("resize", fitStage);
  $("overlay-select").addEventListener("change", (e) => select(e.target.value));
  $("opacity").addEventListener("input", () => {
    $("opacity-value").textContent = `${$("opacity").value}%`;
    $("opacity").setAttribute("aria-valuetext", `${$("opacity").value}%`);
    $("overlay-canvas").style.opacity = String($("opacity").value / 100);
  });
  for (const radio of document.querySelectorAll('input[name="tool"]')) radio.addEventListener("change", (e) => state.drawer.setTool(e.target.value));
  $("clear-region").addEventListener("click", () => state.drawer.clear());
  $("run-region").addEventListener("click", () => runRegion(false));
  $("run-whole-image").addEventListener("click", () => runRegion(true));
  $("group-form").addEventListener("submit", labelGroup);
  try {
    const vocabulary = await lexicon();
    $("group-category").append(...vocabulary.categories.map((c) => el("option", { value: c }, c)));
    $("group-association").append(...vocabulary.cancer_associations.map((a) => el("option", { value: a, selected: a === "unsure" }, a)));
    $("group-label").maxLength = vocabulary.max_label_length;
    state.reloadLabels = offerLabels($("group-label"), $("group-category"));
    await state.reloadLabels();
    const units = await getJSON("/units");
    $("class-name").append(...units.classes.map((c) => el("option", { value: c }, c)));
  } catch (error) {
    if (error instanceof ApiError) loadFailed(error, "Could not load the model's classes");
    else throw error;
  }
  const suspicious = new URLSearchParams(location.search).get("suspicious");
  if (suspicious) await openSuspicious(suspicious);
}

main();
