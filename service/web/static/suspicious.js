// The suspicious patches: the hold-out cells the model finds most likely malignant or benign (GET
// /suspicious-patches, most probable first), as thumbnails cut from the stored mammograms. Pointing
// at one, or focusing it, outlines it in its mammogram; selecting it opens the explanation viewer,
// which explains that mammogram and runs the region query on the patch (explain.js, `?suspicious=`).

import { ApiError, getJSON, imageURL } from "./api.js";
import { announce, el, initSession, loadFailed } from "./session.js";

const THUMB = 96; // canvas pixels of a thumbnail's side
const PREVIEW_HEIGHT = 420; // canvas pixels of the preview's height at most
const $ = (id) => document.getElementById(id);
const percent = (v) => `${(100 * v).toFixed(1)}%`;

const images = new Map(); // image URL -> Promise<ImageBitmap>

/** The stored mammogram, fetched with the token and decoded once per page. */
function picture(url) {
  if (!images.has(url)) {
    const pending = imageURL(url).then(async (objectURL) => createImageBitmap(await (await fetch(objectURL)).blob()));
    pending.catch(() => images.delete(url));
    images.set(url, pending);
  }
  return images.get(url);
}

/** Where the viewer opens a patch: it explains the mammogram and queries the patch's region. */
const queryLink = (patch) => `/ui/explain?${new URLSearchParams({ suspicious: patch.id })}`;

function describe(patch) {
  return `${patch.class} #${patch.rank}, probability ${percent(patch.probability)}, image ${patch.image_id}`;
}

async function drawThumb(canvas, patch) {
  const bitmap = await picture(patch.image.url);
  const b = patch.context_box;
  canvas.getContext("2d").drawImage(bitmap, b.left, b.top, b.width, b.height, 0, 0, THUMB, THUMB);
}

/** The patch outlined in its mammogram, with its cell marked. */
async function preview(patch, link) {
  for (const a of $("patches").querySelectorAll("a.previewed")) a.classList.remove("previewed");
  link.classList.add("previewed");
  $("preview").hidden = false;
  const bitmap = await picture(patch.image.url);
  const [h, w] = patch.image.shape;
  const f = Math.min(PREVIEW_HEIGHT / h, 2);
  const canvas = $("preview-canvas");
  canvas.width = Math.round(w * f);
  canvas.height = Math.round(h * f);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  // On whole canvas pixels, so the outlines stay crisp; the patch last, as it may coincide with its cell.
  const box = (b, colour, width) => {
    ctx.strokeStyle = colour;
    ctx.lineWidth = width;
    const [x0, y0] = [Math.round(b.left * f), Math.round(b.top * f)];
    const [x1, y1] = [Math.round((b.left + b.width) * f), Math.round((b.top + b.height) * f)];
    ctx.strokeRect(x0 + width / 2, y0 + width / 2, Math.max(1, x1 - x0 - width), Math.max(1, y1 - y0 - width));
  };
  box(patch.context_cell_box, "#ff4d4d", 1);
  box(patch.context_box, "#ffd400", 2);
  canvas.dataset.patch = patch.id;
  $("preview-caption").textContent =
    `${describe(patch)}: the patch in yellow, its layer4 cell in red where it differs. Stored as the network saw it, ${w}×${h} pixels ` +
    `(the original is ${patch.image.original_shape[1]}×${patch.image.original_shape[0]}).`;
  $("preview-query").href = queryLink(patch);
}

function render(patches) {
  const items = patches.map((patch) => {
    const canvas = el("canvas", { width: THUMB, height: THUMB, "aria-hidden": "true" });
    const link = el(
      "a",
      { href: queryLink(patch), dataset: { patch: patch.id, probability: patch.probability }, "aria-label": `${describe(patch)}: run the region query on it` },
      canvas,
      el("span", { class: patch.class }, `${patch.class} #${patch.rank}`),
      el("span", { class: "num" }, percent(patch.probability)),
    );
    const show = () => preview(patch, link).catch(failed);
    link.addEventListener("mouseenter", show);
    link.addEventListener("focus", show);
    drawThumb(canvas, patch).catch(failed);
    return el("li", {}, link);
  });
  $("patches").replaceChildren(...items);
}

function failed(error) {
  loadFailed(error, "Could not load the suspicious patches");
}

let latest = 0; // the newest load: an earlier filter's answer arriving late is dropped

async function load(className) {
  const params = new URLSearchParams(className ? { class: className } : {});
  const mine = ++latest;
  announce("Loading the suspicious patches…");
  try {
    const body = await getJSON(`/suspicious-patches${className ? `?${params}` : ""}`);
    if (mine !== latest) return body;
    render(body.patches);
    announce(`${body.patches.length} patch${body.patches.length === 1 ? "" : "es"}${className ? ` of ${className}` : ""}, most probable first.`);
    return body;
  } catch (error) {
    if (error instanceof ApiError && error.status === 404 && error.code === "not_in_bundle") {
      $("patches").replaceChildren();
      announce("");
      $("intro").textContent = "This model bundle records no suspicious patches: it was built before they were added. Rebuild it to list them.";
      return null;
    }
    failed(error);
    announce("");
    return null;
  }
}

async function main() {
  initSession();
  const body = await load("");
  if (!body) return;
  const filter = $("class-filter");
  filter.append(...body.classes.map((c) => el("label", {}, el("input", { type: "radio", name: "class", value: c }), ` ${c}`)));
  filter.addEventListener("change", (event) => {
    $("preview").hidden = true;
    load(event.target.value);
  });
}

main();
