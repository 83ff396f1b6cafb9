// Just enough DICOM to show an uncompressed grayscale image in the browser: Part 10 files (or bare
// datasets) in Implicit or Explicit VR Little Endian, 8/16-bit MONOCHROME1/2, one frame. Compressed
// transfer syntaxes (JPEG, JPEG 2000, RLE…) return null: the viewer then shows the server's PNG
// overlay instead (see explain.js). Pixel values pass through the modality rescale and the first
// VOI window when the file has one, else they are stretched over their own minimum and maximum.

const IMPLICIT_LE = "1.2.840.10008.1.2";
const EXPLICIT_LE = "1.2.840.10008.1.2.1";
// VRs whose explicit-VR header has 2 reserved bytes and a 4-byte length.
const LONG_VRS = new Set(["OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"]);
const UNDEFINED = 0xffffffff;

class Reader {
  constructor(buffer) {
    this.view = new DataView(buffer);
    this.bytes = new Uint8Array(buffer);
  }
  text(offset, length) {
    let s = "";
    for (let i = 0; i < length; i++) s += String.fromCharCode(this.bytes[offset + i]);
    return s.replace(/[\0 ]+$/, "").trim();
  }
}

/** One element header at `offset`: {group, element, vr, length, value (offset of the value)}. */
function header(r, offset, explicit) {
  const group = r.view.getUint16(offset, true);
  const element = r.view.getUint16(offset + 2, true);
  if (group === 0xfffe) return { group, element, vr: null, length: r.view.getUint32(offset + 4, true), value: offset + 8 };
  if (!explicit) return { group, element, vr: null, length: r.view.getUint32(offset + 4, true), value: offset + 8 };
  const vr = String.fromCharCode(r.bytes[offset + 4], r.bytes[offset + 5]);
  if (LONG_VRS.has(vr)) return { group, element, vr, length: r.view.getUint32(offset + 8, true), value: offset + 12 };
  return { group, element, vr, length: r.view.getUint16(offset + 6, true), value: offset + 8 };
}

/** The offset just past a value of undefined length (a sequence or item), walking nested elements. */
function skipUndefined(r, offset, explicit) {
  while (offset + 8 <= r.bytes.length) {
    const h = header(r, offset, explicit);
    if (h.group === 0xfffe && (h.element === 0xe0dd || h.element === 0xe00d)) return h.value; // delimiters
    offset = h.length === UNDEFINED ? skipUndefined(r, h.value, explicit) : h.value + h.length;
  }
  throw new Error("truncated DICOM sequence");
}

const TAGS = {
  "0028,0002": "samples",
  "0028,0004": "photometric",
  "0028,0008": "frames",
  "0028,0010": "rows",
  "0028,0011": "columns",
  "0028,0100": "bitsAllocated",
  "0028,0103": "signed",
  "0028,1050": "windowCenter",
  "0028,1051": "windowWidth",
  "0028,1052": "intercept",
  "0028,1053": "slope",
};
const NUMERIC_TEXT = new Set(["windowCenter", "windowWidth", "intercept", "slope", "frames"]);

function key(group, element) {
  const hex = (n) => n.toString(16).padStart(4, "0").toUpperCase();
  return `${hex(group)},${hex(element)}`;
}

/** Parse the dataset; returns its image attributes and where the pixel data lie, or null when unsupported. */
export function parseDicom(buffer) {
  const r = new Reader(buffer);
  let offset = 0;
  let explicit = true;
  let syntax = EXPLICIT_LE;
  if (r.bytes.length > 132 && r.text(128, 4) === "DICM") {
    offset = 132;
    // The file meta group is always Explicit VR Little Endian.
    while (offset + 8 <= r.bytes.length && r.view.getUint16(offset, true) === 0x0002) {
      const h = header(r, offset, true);
      if (h.element === 0x0010) syntax = r.text(h.value, h.length);
      offset = h.value + h.length;
    }
  } else {
    // A bare dataset: guess the VR style from the first element.
    const vr = String.fromCharCode(r.bytes[4], r.bytes[5]);
    explicit = /^[A-Z]{2}$/.test(vr);
    syntax = explicit ? EXPLICIT_LE : IMPLICIT_LE;
  }
  if (syntax === IMPLICIT_LE) explicit = false;
  else if (syntax !== EXPLICIT_LE) return null; // compressed or big-endian: not drawn here
  const info = { samples: 1, photometric: "MONOCHROME2", frames: 1, bitsAllocated: 16, signed: 0, slope: 1, intercept: 0 };
  while (offset + 8 <= r.bytes.length) {
    const h = header(r, offset, explicit);
    const k = key(h.group, h.element);
    if (h.group === 0x7fe0 && h.element === 0x0010) {
      if (h.length === UNDEFINED) return null; // encapsulated (compressed) frames
      info.pixelOffset = h.value;
      info.pixelLength = h.length;
      break;
    }
    if (h.length === UNDEFINED) {
      offset = skipUndefined(r, h.value, explicit);
      continue;
    }
    const name = TAGS[k];
    if (name) {
      if (NUMERIC_TEXT.has(name)) info[name] = parseFloat(r.text(h.value, h.length).split("\\")[0]);
      else if (name === "photometric") info[name] = r.text(h.value, h.length);
      else info[name] = r.view.getUint16(h.value, true);
    }
    offset = h.value + h.length;
  }
  const ok =
    info.pixelOffset !== undefined &&
    info.rows > 0 &&
    info.columns > 0 &&
    info.samples === 1 &&
    (info.frames || 1) === 1 &&
    /^MONOCHROME[12]$/.test(info.photometric) &&
    (info.bitsAllocated === 8 || info.bitsAllocated === 16) &&
    info.pixelLength >= (info.rows * info.columns * info.bitsAllocated) / 8;
  return ok ? info : null;
}

/** The DICOM image in `buffer` as ImageData (grayscale), or null when it cannot be drawn here. */
export function dicomToImageData(buffer) {
  let info;
  try {
    info = parseDicom(buffer);
  } catch {
    return null;
  }
  if (!info) return null;
  const n = info.rows * info.columns;
  const view = new DataView(buffer, info.pixelOffset);
  const values = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let v;
    if (info.bitsAllocated === 8) v = info.signed ? view.getInt8(i) : view.getUint8(i);
    else v = info.signed ? view.getInt16(2 * i, true) : view.getUint16(2 * i, true);
    values[i] = v * (info.slope || 1) + (info.intercept || 0);
  }
  let lo;
  let hi;
  if (Number.isFinite(info.windowCenter) && info.windowWidth > 1) {
    lo = info.windowCenter - 0.5 - (info.windowWidth - 1) / 2;
    hi = info.windowCenter - 0.5 + (info.windowWidth - 1) / 2;
  } else {
    lo = Infinity;
    hi = -Infinity;
    for (const v of values) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  const span = hi > lo ? hi - lo : 1;
  const invert = info.photometric === "MONOCHROME1";
  const image = new ImageData(info.columns, info.rows);
  for (let i = 0; i < n; i++) {
    let g = Math.round((255 * (values[i] - lo)) / span);
    g = Math.min(Math.max(g, 0), 255);
    if (invert) g = 255 - g;
    image.data[4 * i] = image.data[4 * i + 1] = image.data[4 * i + 2] = g;
    image.data[4 * i + 3] = 255;
  }
  return image;
}
