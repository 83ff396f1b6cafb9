// Drawing a region on the image, in the uploaded image's pixel coordinates: a rectangle (drag, or
// arrow keys) or a polygon (click the corners, then Enter or double-click). The SVG's viewBox is
// the image's size, so SVG user units are image pixels.

const SVG_NS = "http://www.w3.org/2000/svg";
const STEP = 0.02; // keyboard step, as a share of the image's longer side

export class RegionDrawer {
  /** `svg`: the drawing surface over the image; `onChange(points|null)` after every change. */
  constructor(svg, onChange) {
    this.svg = svg;
    this.onChange = onChange;
    this.tool = "rectangle";
    this.points = null; // closed region: [[x, y], …] in SVG user units (pixel edges at whole numbers)
    this.draft = []; // polygon corners while drawing
    this.dragStart = null;
    this.size = [1, 1];
    svg.addEventListener("pointerdown", (e) => this.down(e));
    svg.addEventListener("pointermove", (e) => this.move(e));
    svg.addEventListener("pointerup", (e) => this.up(e));
    svg.addEventListener("dblclick", (e) => {
      e.preventDefault();
      this.closePolygon();
    });
    svg.addEventListener("keydown", (e) => this.key(e));
  }

  /** Prepare for an image of (height, width) pixels; clears any region. */
  reset(height, width) {
    this.size = [height, width];
    this.svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    this.svg.setAttribute("preserveAspectRatio", "none");
    this.clear();
  }

  setTool(tool) {
    this.tool = tool;
    this.draft = [];
    this.render();
  }

  /** Draw the rectangle with these edges (image pixels, pixel edges at whole numbers), as a drag would. */
  setRectangle(left, top, right, bottom) {
    const [h, w] = this.size;
    this.draft = [];
    this.points = rect([clamp(left, 0, w), clamp(top, 0, h)], [clamp(right, 0, w), clamp(bottom, 0, h)]);
    this.render();
    this.onChange(this.points);
  }

  clear() {
    this.points = null;
    this.draft = [];
    this.dragStart = null;
    this.render();
    this.onChange(null);
  }

  /** The region for the API: [[x, y], …] with x = column, y = row, pixel centres at whole numbers. */
  polygon() {
    return this.points ? this.points.map(([x, y]) => [round(x - 0.5), round(y - 0.5)]) : null;
  }

  toImage(event) {
    const box = this.svg.getBoundingClientRect();
    const [h, w] = this.size;
    const x = ((event.clientX - box.left) / box.width) * w;
    const y = ((event.clientY - box.top) / box.height) * h;
    return [clamp(x, 0, w), clamp(y, 0, h)];
  }

  down(event) {
    if (event.button !== 0) return;
    const p = this.toImage(event);
    if (this.tool === "rectangle") {
      this.svg.setPointerCapture(event.pointerId);
      this.dragStart = p;
      this.points = rect(p, p);
    } else {
      this.points = null;
      this.draft.push(p);
    }
    this.render();
  }

  move(event) {
    if (this.tool === "rectangle" && this.dragStart) {
      this.points = rect(this.dragStart, this.toImage(event));
      this.render();
    } else if (this.tool === "polygon" && this.draft.length) {
      this.render(this.toImage(event));
    }
  }

  up() {
    if (this.tool !== "rectangle" || !this.dragStart) return;
    this.dragStart = null;
    const [[x0, y0], , [x1, y1]] = this.points;
    if (Math.abs(x1 - x0) < 2 || Math.abs(y1 - y0) < 2) this.points = null; // a click, not a drag
    this.render();
    this.onChange(this.points);
  }

  closePolygon() {
    if (this.tool !== "polygon") return;
    // A double-click adds its own corner twice; drop repeats.
    const corners = this.draft.filter((p, i, all) => i === 0 || Math.hypot(p[0] - all[i - 1][0], p[1] - all[i - 1][1]) > 1);
    this.draft = [];
    this.points = corners.length >= 3 ? corners : null;
    this.render();
    this.onChange(this.points);
  }

  key(event) {
    if (event.key === "Escape") {
      this.clear();
      return;
    }
    if (event.key === "Enter" && this.tool === "polygon") {
      event.preventDefault();
      this.closePolygon();
      return;
    }
    const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (!(event.key in arrows) || this.tool !== "rectangle") return;
    event.preventDefault();
    const [h, w] = this.size;
    const step = STEP * Math.max(h, w);
    if (!this.points) this.points = rect([w * 0.4, h * 0.4], [w * 0.6, h * 0.6]);
    let [[x0, y0], , [x1, y1]] = this.points;
    const [dx, dy] = arrows[event.key].map((d) => d * step);
    if (event.shiftKey) {
      x1 = clamp(x1 + dx, x0 + 1, w);
      y1 = clamp(y1 + dy, y0 + 1, h);
    } else {
      const mx = clamp(dx, -x0, w - x1);
      const my = clamp(dy, -y0, h - y1);
      [x0, x1, y0, y1] = [x0 + mx, x1 + mx, y0 + my, y1 + my];
    }
    this.points = rect([x0, y0], [x1, y1]);
    this.render();
    this.onChange(this.points);
  }

  render(cursor = null) {
    const [h, w] = this.size;
    const stroke = Math.max(1, Math.max(h, w) / 250);
    const shapes = [];
    if (this.points) shapes.push(el("polygon", { points: fmt(this.points), fill: "rgba(255,212,0,0.18)", stroke: "#ffd400", "stroke-width": stroke }));
    if (this.draft.length) {
      const line = cursor ? [...this.draft, cursor] : this.draft;
      shapes.push(el("polyline", { points: fmt(line), fill: "none", stroke: "#ffd400", "stroke-width": stroke, "stroke-dasharray": `${3 * stroke} ${2 * stroke}` }));
      for (const [x, y] of this.draft) shapes.push(el("circle", { cx: x, cy: y, r: 2.5 * stroke, fill: "#ffd400" }));
    }
    this.svg.replaceChildren(...shapes);
  }
}

function el(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);
const round = (v) => Math.round(v * 100) / 100;
const fmt = (points) => points.map(([x, y]) => `${x.toFixed(2)},${y.toFixed(2)}`).join(" ");

function rect([ax, ay], [bx, by]) {
  const [x0, x1] = [Math.min(ax, bx), Math.max(ax, bx)];
  const [y0, y1] = [Math.min(ay, by), Math.max(ay, by)];
  return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]];
}
