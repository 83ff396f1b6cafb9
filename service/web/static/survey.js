// The expert survey of one unit (DESIGN.md §2): its top patches, masked, with their source
// mammograms; the four questions, a short label, a BI-RADS category; other experts' labels.
// Saving sends If-Match with the unit's ETag; a 412 shows the version saved in between and lets
// the expert re-apply theirs on top. Typed text is kept per unit for the tab, so nothing is lost.

import { ApiError, getAnnotator, getJSON, imageURL, lexicon, request } from "./api.js";
import { announce, clearAlert, el, initSession, loadFailed, showAlert, showError } from "./session.js";
import { currentAnnotations, progress } from "./units.js";
import { offerLabels } from "./vocabulary.js";

const ME_KEY = "deepminer.me"; // the annotator name the service recorded for this tab's last save

const state = {
  unitId: null,
  unit: null,
  etag: null,
  units: [],
  bundleHash: "",
  visualisation: null,
  plain: false,
  saving: false,
  reloadLabels: null, // re-reads the label suggestions
};

const form = document.getElementById("survey-form");
const $ = (id) => document.getElementById(id);

function unitIdFromLocation() {
  const match = location.pathname.match(/\/ui\/units\/(\d+)\/?$/);
  if (match) return Number(match[1]);
  const q = new URLSearchParams(location.search).get("unit");
  return q !== null && /^\d+$/.test(q) ? Number(q) : null;
}

function me() {
  return getAnnotator() || sessionStorage.getItem(ME_KEY) || "";
}

// -- drafts -------------------------------------------------------------------

function draftKey() {
  return `deepminer.draft.${state.bundleHash}.${state.unitId}`;
}

function readForm() {
  const value = (name) => form.querySelector(`input[name="${name}"]:checked`)?.value ?? null;
  const recognizable = value("recognizable");
  return {
    recognizable: recognizable === null ? null : recognizable === "yes",
    cancer_association: value("cancer_association"),
    phenomena: value("phenomena"),
    description: $("description").value,
    label: $("label").value,
    category: $("category").value,
  };
}

function fillForm(answers) {
  const check = (name, v) => {
    for (const input of form.querySelectorAll(`input[name="${name}"]`)) input.checked = v !== null && v !== undefined && input.value === v;
  };
  check("recognizable", answers.recognizable === true ? "yes" : answers.recognizable === false ? "no" : null);
  check("cancer_association", answers.cancer_association);
  check("phenomena", answers.phenomena);
  $("description").value = answers.description || "";
  $("label").value = answers.label || "";
  $("category").value = answers.category || "";
  syncLabelRequirement();
}

function saveDraft() {
  sessionStorage.setItem(draftKey(), JSON.stringify(readForm()));
  $("draft-state").textContent = "Unsaved changes (kept for this tab).";
}

function clearDraft() {
  sessionStorage.removeItem(draftKey());
  $("draft-state").textContent = "";
}

function loadDraft() {
  try {
    return JSON.parse(sessionStorage.getItem(draftKey()) || "null");
  } catch {
    return null;
  }
}

// -- rendering ----------------------------------------------------------------

function buildChoices(vocabulary) {
  const radios = (container, name, values, labels = {}) =>
    $(container).replaceChildren(
      ...values.map((v) => el("label", {}, el("input", { type: "radio", name, value: v }), ` ${labels[v] || v[0].toUpperCase() + v.slice(1)}`)),
    );
  radios("association-choices", "cancer_association", vocabulary.cancer_associations);
  radios("phenomena-choices", "phenomena", vocabulary.phenomena, { single: "A single phenomenon", several: "Several phenomena" });
  $("category").append(...vocabulary.categories.map((c) => el("option", { value: c }, c)));
  $("label").maxLength = vocabulary.max_label_length;
  $("description").maxLength = vocabulary.max_description_length;
}

function renderHeader() {
  const u = state.unit;
  $("unit-title").textContent = `Unit ${u.unit_id}`;
  document.title = `Unit ${u.unit_id} · Unit survey · DeepMiner`;
  const ranks = Object.entries(u.ranks).map(([c, r]) => `rank ${r} for ${c} (in ${u.counts[c] ?? 0} images' top lists)`);
  $("unit-line").textContent = ranks.length ? ranks.join(" · ") : "Not among the ranked units of any class.";
  const p = progress(state.units, me());
  $("progress").textContent = `${p.labelled} of ${p.total} labelled` + (me() ? ` · ${p.mine} by ${me()}` : "");
  const ids = state.units.map((x) => x.unit_id);
  const i = ids.indexOf(u.unit_id);
  const prev = i > 0 ? ids[i - 1] : null;
  const next = i < 0 ? ids[0] ?? null : i + 1 < ids.length ? ids[i + 1] : null;
  for (const [link, target, word] of [[$("prev-unit"), prev, "Previous"], [$("next-unit"), next, "Next"]]) {
    if (target === null) {
      link.removeAttribute("href");
      link.setAttribute("aria-disabled", "true");
      link.setAttribute("aria-label", `${word} unit: none`);
    } else {
      link.href = `/ui/units/${target}`;
      link.removeAttribute("aria-disabled");
      link.setAttribute("aria-label", `${word} unit: unit ${target}`);
    }
  }
}

function annotationItem(a, { mine = false } = {}) {
  const when = new Date(a.created_at).toLocaleString();
  const answers = [
    a.recognizable === null ? null : `recognizable: ${a.recognizable ? "yes" : "no"}`,
    `cancer: ${a.cancer_association}`,
    a.phenomena ? `${a.phenomena} phenomen${a.phenomena === "single" ? "on" : "a"}` : null,
  ].filter(Boolean);
  return el(
    "li",
    { dataset: { annotator: a.annotator, source: a.source } },
    a.recognizable === false && !a.label ? el("strong", {}, "Not recognisable") : el("strong", {}, a.label),
    ` — ${a.category}`,
    el("br"),
    el("span", { class: "hint" }, `${a.annotator}${mine ? " (you)" : ""} · ${a.source} · version ${a.version} · ${when}`),
    a.current_bundle === false ? el("span", { class: "badge automatic" }, " made under an earlier model") : null,
    el("br"),
    el("span", { class: "hint" }, answers.join(" · ")),
    a.description ? el("p", { class: "hint" }, a.description) : null,
  );
}

/** The label is required unless the expert answers "not recognisable"; the form says which. */
function syncLabelRequirement() {
  const optional = readForm().recognizable === false;
  $("label").required = !optional;
  $("label-required").textContent = optional ? "(optional: not recognisable)" : "(required)";
}

function renderLabels() {
  const list = $("labels");
  const all = [...(state.unit.annotations || [])].sort((a, b) => (a.source === b.source ? b.id - a.id : a.source === "expert" ? -1 : 1));
  list.replaceChildren(...all.map((a) => annotationItem(a, { mine: a.annotator === me() })));
  if (!all.length) list.append(el("li", { class: "muted" }, "Nobody has labelled this unit yet."));
}

async function showContext(patch, button) {
  for (const b of $("patch-grid").querySelectorAll("button")) b.setAttribute("aria-pressed", String(b === button));
  const figure = $("context-figure");
  const img = $("context-img");
  const svg = $("context-svg");
  try {
    img.src = await imageURL(patch.context);
  } catch (error) {
    showError(error, "Could not load the source mammogram");
    return;
  }
  await img.decode().catch(() => {});
  const w = img.naturalWidth;
  const h = img.naturalHeight;
  const b = patch.context_box;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.innerHTML = `<rect x="${b.left}" y="${b.top}" width="${b.width}" height="${b.height}" fill="none" stroke="#ffd400" stroke-width="${Math.max(1.5, w / 150)}"/>`;
  img.alt = `Source mammogram ${patch.image_id}; the patch is outlined at row ${patch.box.top}, column ${patch.box.left}, side ${patch.box.side} pixels`;
  figure.hidden = false;
  $("context-caption").textContent = `Patch ${patch.rank} comes from mammogram ${patch.image_id} (outlined). Unit activation ${patch.activation.toFixed(3)}; ${(100 * patch.mask_fraction).toFixed(0)}% of the patch inside the unit's mask.`;
}

/** Where the patches come from, for a unit outside the ranked set; and why some have no pictures. */
function renderPatchSource(vis) {
  const note = $("patch-source");
  const parts = [];
  if (vis.source === "rendered") {
    parts.push(
      `Unit ${state.unitId} is not among the ${state.units.length} ranked units: the model bundle lists its top hold-out patches, ` +
        "and the service drew them now from the hold-out mammograms.",
    );
  }
  if (!vis.images_available) {
    const missing = vis.patches.filter((p) => !p.patch).length;
    parts.push(
      `The hold-out images of ${missing} of its ${vis.patches.length} patches are not available to the service, so those are listed ` +
        `by mammogram, place and activation only. ${vis.images_note ?? ""}`,
    );
  }
  note.textContent = parts.join(" ");
  note.hidden = !parts.length;
}

/** A patch whose hold-out image the service cannot read: its mammogram, box and activation, in words. */
function patchWithoutImage(patch) {
  const b = patch.box;
  return el(
    "li",
    { class: "muted no-image", dataset: { rank: patch.rank } },
    el("span", { class: "caption" }, `#${patch.rank} · ${patch.activation.toFixed(2)}`),
    ` Image not available: mammogram ${patch.image_id}, row ${b.top}, column ${b.left}, side ${b.side} px.`,
  );
}

async function renderPatches() {
  const grid = $("patch-grid");
  const vis = state.visualisation;
  if (!vis) {
    $("patch-source").hidden = true;
    const ranked = state.units.some((u) => u.unit_id === state.unitId);
    grid.replaceChildren(
      el(
        "li",
        { class: "muted no-patches" },
        ranked
          ? "The model bundle has no top patches for this unit."
          : `Unit ${state.unitId} is not among the ${state.units.length} ranked units, and this model bundle stores top patches for those only. ` +
              "It can still be labelled here; its map on a mammogram shows in the explanation viewer (a region query that matches it links here).",
      ),
    );
    return;
  }
  renderPatchSource(vis);
  const items = vis.patches.map((patch) => {
    if (!patch.patch) return patchWithoutImage(patch);
    const img = el("img", { alt: `Patch ${patch.rank}${state.plain ? "" : ", masked"}, from ${patch.image_id}` });
    const button = el(
      "button",
      { type: "button", "aria-pressed": "false", "aria-label": `Patch ${patch.rank} from ${patch.image_id}: show it in its mammogram`, dataset: { rank: patch.rank } },
      img,
      el("span", { class: "caption" }, `#${patch.rank} · ${patch.activation.toFixed(2)}`),
    );
    const show = () => showContext(patch, button);
    button.addEventListener("mouseenter", show);
    button.addEventListener("focus", show);
    button.addEventListener("click", show);
    imageURL(state.plain ? patch.patch : patch.masked)
      .then((url) => (img.src = url))
      .catch((error) => showError(error, "Could not load a patch image"));
    return el("li", {}, button);
  });
  grid.replaceChildren(...items);
  if (!items.length) grid.append(el("li", { class: "muted" }, "No patches."));
  $("patch-count").textContent = items.length ? `${items.length} patches, best first; the grid scrolls.` : "";
}

// -- saving and conflicts -----------------------------------------------------

function invalid(input, message) {
  input.setAttribute("aria-invalid", "true");
  return message;
}

function validate(answers) {
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  const problems = [];
  // An expert who sees no recognisable phenomenon has nothing to name: the label is then optional.
  if (!answers.label.trim() && answers.recognizable !== false) problems.push([$("label"), invalid($("label"), "Give a short label (or answer that the images show no recognizable phenomena).")]);
  if (!answers.category) problems.push([$("category"), invalid($("category"), "Choose a BI-RADS lexicon category.")]);
  if (!answers.cancer_association) problems.push([form.querySelector('input[name="cancer_association"]'), "Answer whether they are associated with breast cancer."]);
  return problems;
}

function body(answers) {
  const out = {
    label: answers.label.trim(),
    category: answers.category,
    cancer_association: answers.cancer_association,
    recognizable: answers.recognizable,
    phenomena: answers.phenomena,
    description: answers.description,
  };
  const name = getAnnotator();
  if (name) out.annotator = name;
  return out;
}

async function save() {
  if (state.saving) return;
  const answers = readForm();
  const problems = validate(answers);
  if (problems.length) {
    showAlert(problems.map(([, m]) => m).join(" "));
    problems[0][0].focus();
    return;
  }
  state.saving = true;
  $("save").disabled = true;
  try {
    const headers = state.etag ? { "If-Match": state.etag } : {};
    const response = await request(`/units/${state.unitId}`, { method: "PUT", json: body(answers), headers });
    const saved = await response.json();
    sessionStorage.setItem(ME_KEY, saved.annotator);
    clearDraft();
    clearAlert();
    $("conflict").hidden = true;
    await Promise.all([reloadUnit(), state.reloadLabels()]);
    const what = saved.label ? `“${saved.label}”` : "“not recognisable”";
    announce(`Saved: ${what} is version ${saved.version} of ${saved.annotator}'s label for unit ${saved.unit_id}.`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 412) await showConflict();
    else if (error instanceof ApiError && error.field && form.elements[error.field]) {
      showError(error, "Not saved");
      const field = form.elements[error.field];
      (field.focus ? field : field[0]).focus?.();
    } else showError(error, "Not saved");
  } finally {
    state.saving = false;
    $("save").disabled = false;
  }
}

/** Another version was saved since this page read the unit: show it; the form keeps what was typed. */
async function showConflict() {
  const before = new Set((state.unit.annotations || []).map((a) => a.id));
  try {
    await reloadUnit({ keepForm: true });
  } catch (error) {
    showError(error, "Not saved, and the unit could not be reloaded");
    return;
  }
  const changed = currentAnnotations(state.unit.annotations).filter((a) => !before.has(a.id));
  const box = $("conflict");
  const list = el("ul", { class: "labels-list" }, ...(changed.length ? changed : state.unit.annotations).map((a) => annotationItem(a, { mine: a.annotator === me() })));
  const theirs = changed.find((a) => a.annotator === me()) || changed[0];
  box.replaceChildren(
    el("h2", {}, "Not saved: this unit changed while you were editing"),
    el("p", {}, "Someone saved a label for this unit after you opened it. Their version is below; your answers are still in the form."),
    list,
    el(
      "div",
      { class: "row" },
      el("button", { type: "button", class: "primary", id: "reapply", onclick: () => save() }, "Save mine on top"),
      theirs
        ? el("button", { type: "button", id: "use-theirs", onclick: () => { fillForm(theirs); saveDraft(); box.hidden = true; $("label").focus(); } }, "Copy their answers into the form")
        : null,
    ),
  );
  box.hidden = false;
  showAlert("Not saved: the unit was labelled by someone else in the meantime (412). Review their version, then save yours on top.");
  box.focus();
}

// -- loading --------------------------------------------------------------------

async function reloadUnit({ keepForm = false } = {}) {
  const [response, overview] = await Promise.all([request(`/units/${state.unitId}`), getJSON("/units")]);
  state.etag = response.headers.get("ETag");
  state.unit = await response.json();
  state.units = overview.units;
  state.bundleHash = overview.bundle_hash;
  renderHeader();
  renderLabels();
  if (!keepForm) prefill();
}

function prefill() {
  const draft = loadDraft();
  if (draft) {
    fillForm(draft);
    $("draft-state").textContent = "Unsaved changes restored (kept for this tab).";
    return;
  }
  const mine = currentAnnotations(state.unit.annotations).find((a) => a.source === "expert" && a.annotator === me());
  fillForm(mine || {});
}

function goTo(link) {
  if (link.getAttribute("href")) location.assign(link.href);
}

function isTyping(target) {
  return target.closest("input, textarea, select, [contenteditable='true']") !== null;
}

function bindKeys() {
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      event.preventDefault();
      save();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || isTyping(event.target)) return;
    if (event.key === "n") goTo($("next-unit"));
    else if (event.key === "p") goTo($("prev-unit"));
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    save();
  });
  form.addEventListener("input", saveDraft);
  form.addEventListener("change", saveDraft);
  form.addEventListener("change", syncLabelRequirement);
  $("show-plain").addEventListener("change", (event) => {
    state.plain = event.target.checked;
    renderPatches();
  });
}

async function main() {
  initSession();
  bindKeys();
  state.unitId = unitIdFromLocation();
  try {
    buildChoices(await lexicon());
    state.reloadLabels = offerLabels($("label"), $("category"));
    if (state.unitId === null) {
      // /ui/survey without a unit: start at the first ranked unit no expert has labelled.
      const { units } = await getJSON("/units");
      const first = units.find((u) => !u.annotations.some((a) => a.source === "expert" && a.current_bundle !== false)) || units[0];
      if (!first) {
        showAlert("The model bundle ranks no units.", "info");
        return;
      }
      location.replace(`/ui/units/${first.unit_id}`);
      return;
    }
    await Promise.all([reloadUnit(), state.reloadLabels()]);
  } catch (error) {
    loadFailed(error, `Could not load unit ${state.unitId ?? ""}`);
    return;
  }
  try {
    state.visualisation = await getJSON(`/units/${state.unitId}/visualisation`);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) loadFailed(error, "Could not load the unit's top patches");
  }
  await renderPatches();
  announce(`Unit ${state.unitId} loaded.`);
}

main();
