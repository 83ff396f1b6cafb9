// Grid maps of /explain drawn over the image: decoding either encoding, bilinear upsampling with
// the map's own grid_to_image mapping (the same arithmetic as deepminer.grid.upsample), and the jet
// colour map of service/overlays.py, so what the page draws matches the server's PNG overlays.

/** A map's values as a Float32Array (row-major) whatever its `encoding` ("json" lists or "uint16" base64). */
export function decodeMap(map) {
  const [h, w] = map.shape;
  const out = new Float32Array(h * w);
  if (typeof map.values === "string") {
    if (map.encoding && map.encoding !== "uint16") throw new Error(`unknown map encoding ${map.encoding}`);
    const bytes = Uint8Array.from(atob(map.values), (c) => c.charCodeAt(0));
    const view = new DataView(bytes.buffer);
    if (bytes.length !== 2 * h * w) throw new Error(`expected ${h * w} uint16 codes, got ${bytes.length / 2}`);
    const scale = map.scale ?? 0;
    const offset = map.offset ?? 0;
    for (let i = 0; i < h * w; i++) out[i] = offset + scale * view.getUint16(2 * i, true);
    return out;
  }
  let i = 0;
  for (const row of map.values) for (const v of row) out[i++] = v;
  return out;
}

/** Grid coordinate of an output pixel's centre along one axis, clamped so edge values are held. */
function gridCoords(outSize, imageSize, scale, offset, gridSize) {
  const coords = new Float32Array(outSize);
  for (let p = 0; p < outSize; p++) {
    const pixel = ((p + 0.5) * imageSize) / outSize - 0.5;
    coords[p] = Math.min(Math.max((pixel - offset) / scale, 0), gridSize - 1);
  }
  return coords;
}

/** The map bilinearly upsampled to (outH, outW), which samples a uniformly scaled copy of the upload. */
export function upsample(map, values, outH, outW) {
  const [h, w] = map.shape;
  const g = map.grid_to_image;
  const [imageH, imageW] = g.image_shape;
  const ys = gridCoords(outH, imageH, g.scale[0], g.offset[0], h);
  const xs = gridCoords(outW, imageW, g.scale[1], g.offset[1], w);
  const out = new Float32Array(outH * outW);
  for (let r = 0; r < outH; r++) {
    const y0 = Math.floor(ys[r]);
    const y1 = Math.min(y0 + 1, h - 1);
    const fy = ys[r] - y0;
    for (let c = 0; c < outW; c++) {
      const x0 = Math.floor(xs[c]);
      const x1 = Math.min(x0 + 1, w - 1);
      const fx = xs[c] - x0;
      const top = values[y0 * w + x0] * (1 - fx) + values[y0 * w + x1] * fx;
      const bottom = values[y1 * w + x0] * (1 - fx) + values[y1 * w + x1] * fx;
      out[r * outW + c] = top * (1 - fy) + bottom * fy;
    }
  }
  return out;
}

// MATLAB's jet, as service/overlays.py anchors it: (position, r, g, b).
const JET = [
  [0.0, 0, 0, 143],
  [0.125, 0, 0, 255],
  [0.375, 0, 255, 255],
  [0.625, 255, 255, 0],
  [0.875, 255, 0, 0],
  [1.0, 128, 0, 0],
];

export function jet(n) {
  const t = Math.min(Math.max(n, 0), 1);
  for (let i = 1; i < JET.length; i++) {
    if (t <= JET[i][0]) {
      const [p0, ...a] = JET[i - 1];
      const [p1, ...b] = JET[i];
      const f = (t - p0) / (p1 - p0);
      return a.map((v, k) => Math.round(v + (b[k] - v) * f));
    }
  }
  return JET[JET.length - 1].slice(1);
}

/**
 * Draw a map onto a canvas of the canvas's current size: jet colours, each pixel's opacity growing
 * with the map's normalised value (its own [min, max]), so where the map is lowest the image shows.
 * `range` overrides the normalisation, e.g. [0, 1] for probabilities.
 */
export function drawMap(canvas, map, { range = null, alpha = true } = {}) {
  const values = decodeMap(map);
  const { width, height } = canvas;
  const up = upsample(map, values, height, width);
  const [lo, hi] = range || map.range;
  const span = hi > lo ? hi - lo : 1;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(width, height);
  for (let i = 0; i < up.length; i++) {
    const n = Math.min(Math.max((up[i] - lo) / span, 0), 1);
    const [r, g, b] = jet(n);
    image.data[4 * i] = r;
    image.data[4 * i + 1] = g;
    image.data[4 * i + 2] = b;
    image.data[4 * i + 3] = alpha ? Math.round(255 * n) : 255;
  }
  ctx.putImageData(image, 0, 0);
}

/** A small canvas showing a map on its own (for thumbnails), `size` pixels on its longer side. */
export function mapThumbnail(map, { size = 96, range = null, label = "" } = {}) {
  const [imageH, imageW] = map.grid_to_image.image_shape;
  const f = size / Math.max(imageH, imageW);
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(imageW * f));
  canvas.height = Math.max(1, Math.round(imageH * f));
  drawMap(canvas, map, { range, alpha: false });
  canvas.setAttribute("role", "img");
  if (label) canvas.setAttribute("aria-label", label);
  return canvas;
}
