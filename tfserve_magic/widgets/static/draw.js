// Drawing pad for tfserve_magic's DrawDigit (an anywidget ES module: no front-end extension).
// Pointer events cover mouse, touch and pen. Each finished stroke is appended to the `strokes`
// trait (a list of [x, y] canvas points) and synced to Python, which rasterizes it; the pad
// repaints from `strokes` whenever Python changes them (Clear sets them to []).

// The pad's CSS, added once per page. The result column beside the pad (model input, top
// class, per-class bars) must fit without scrollbars: ipywidgets gives HTML content a 28 px
// line height, taller than the 14 px rows of the bars, so the last row's text overflowed its
// box and the column (an ipywidgets box: overflow auto) showed a vertical scrollbar, and with
// it a horizontal one. Rows of the bars get their own height as line height.
const STYLE_ID = "tfserve-draw-style";
const STYLE = `
.tfserve-draw .jupyter-widget-html-content > div[style*="height:14px"],
.tfserve-draw .widget-html-content > div[style*="height:14px"] {
  line-height: 14px;
}
`;

function addStyle(doc) {
  if (doc.getElementById(STYLE_ID)) return;
  const style = doc.createElement("style");
  style.id = STYLE_ID;
  style.textContent = STYLE;
  doc.head.appendChild(style);
}

function render({ model, el }) {
  addStyle(el.ownerDocument || document);
  const canvas = document.createElement("canvas");
  canvas.className = "tfserve-draw-pad";
  const ctx = canvas.getContext("2d");
  let current = null;

  function size() {
    const side = model.get("size");
    canvas.width = side;
    canvas.height = side;
    // keep its own size: no stretching by the output area's CSS
    Object.assign(canvas.style, {
      width: `${side}px`, height: `${side}px`, maxWidth: "none", flex: "none",
      display: "block", cursor: "crosshair", touchAction: "none",
      border: "1px solid #888", borderRadius: "4px", background: "#000",
    });
  }

  function line(points) {
    if (!points.length) return;
    ctx.beginPath();
    ctx.moveTo(points[0][0], points[0][1]);
    for (const [x, y] of points.slice(1)) ctx.lineTo(x, y);
    if (points.length === 1) ctx.lineTo(points[0][0] + 0.01, points[0][1]);
    ctx.stroke();
  }

  function paint() {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = model.get("line_width");
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    for (const stroke of model.get("strokes")) line(stroke);
    if (current) line(current);
  }

  function point(event) {
    const box = canvas.getBoundingClientRect();
    const sx = canvas.width / (box.width || canvas.width);
    const sy = canvas.height / (box.height || canvas.height);
    const x = Math.min(Math.max((event.clientX - box.left) * sx, 0), canvas.width);
    const y = Math.min(Math.max((event.clientY - box.top) * sy, 0), canvas.height);
    return [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
  }

  function finish() {
    if (!current) return;
    const stroke = current;
    current = null;
    model.set("strokes", [...model.get("strokes"), stroke]);
    model.save_changes();
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== undefined && event.button > 0) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    current = [point(event)];
    paint();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!current) return;
    event.preventDefault();
    const p = point(event);
    const last = current[current.length - 1];
    if (p[0] === last[0] && p[1] === last[1]) return;
    current.push(p);
    ctx.beginPath();
    ctx.moveTo(last[0], last[1]);
    ctx.lineTo(p[0], p[1]);
    ctx.stroke();
  });
  for (const name of ["pointerup", "pointercancel", "lostpointercapture"]) {
    canvas.addEventListener(name, finish);
  }

  model.on("change:strokes", paint);
  model.on("change:line_width", paint);
  model.on("change:size", () => { size(); paint(); });
  size();
  paint();
  el.appendChild(canvas);
  return () => {
    model.off("change:strokes", paint);
    model.off("change:line_width", paint);
  };
}

export default { render };
