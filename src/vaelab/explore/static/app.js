// vaelab explore: the page. Plain JS, no libraries; every image comes from the app's /api routes.
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  info: null, z: null, index: null, label: null, vec: null, strength: 0,
  A: null, B: null, setFrom: [], setTo: [], hover: -1, drag: false,
  busy: false, pending: null, seed: 0, view: null, base: null,
};
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const colour = (k) => (k == null || k < 0 ? "#4b5563" : k < PALETTE.length ? PALETTE[k] : `hsl(${(k * 137.5) % 360} 65% 45%)`);

function status(msg) { $("status").textContent = msg || ""; }

async function api(path) {
  const r = await fetch(path);
  if (!r.ok) {
    let msg = `${r.status}`;
    try { msg = (await r.json()).error; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return r;
}

function labelParam() { return S.info.conditional && S.label != null ? `&label=${S.label}` : ""; }
function fmt(v) { return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2); }

// -- the map ---------------------------------------------------------------------------------------------
function setupView() {
  const xy = S.info.xy;
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const [x, y] of xy) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  const pad = 0.06 * Math.max(x1 - x0, y1 - y0, 1e-6);
  const span = Math.max(x1 - x0, y1 - y0) + 2 * pad; // one scale for both axes: distances stay true
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  S.view = { x0: cx - span / 2, y0: cy - span / 2, span };
}
function toPx(x, y) {
  const c = $("map"), v = S.view;
  return [((x - v.x0) / v.span) * c.width, (1 - (y - v.y0) / v.span) * c.height];
}
function fromPx(px, py) {
  const c = $("map"), v = S.view;
  return [v.x0 + (px / c.width) * v.span, v.y0 + (1 - py / c.height) * v.span];
}
function drawBase() {
  const c = $("map"), base = document.createElement("canvas");
  base.width = c.width; base.height = c.height;
  const g = base.getContext("2d");
  g.fillStyle = "#fff"; g.fillRect(0, 0, c.width, c.height);
  const { xy, labels } = S.info, n = xy.length, r = n > 5000 ? 1.5 : n > 1000 ? 2.2 : 3.2;
  g.globalAlpha = n > 5000 ? 0.55 : 0.8;
  for (let i = 0; i < n; i++) {
    const [px, py] = toPx(xy[i][0], xy[i][1]);
    g.fillStyle = colour(labels ? labels[i] : -1);
    g.beginPath(); g.arc(px, py, r, 0, 2 * Math.PI); g.fill();
  }
  S.base = base;
}
function markerXY() {
  const info = S.info;
  if (!S.z) return null;
  if (info.method === "identity") return [S.z[0], S.z[1]];
  if (info.method === "pca") {
    const { mean, components } = info.pca;
    return [0, 1].map((k) => components[k].reduce((s, c, d) => s + c * (S.z[d] - mean[d]), 0));
  }
  return S.index != null ? info.xy[S.index] : S.clicked;
}
function ring(g, xy, col, label) {
  const [px, py] = toPx(xy[0], xy[1]);
  g.strokeStyle = col; g.lineWidth = 2;
  g.beginPath(); g.arc(px, py, 7, 0, 2 * Math.PI); g.stroke();
  if (label) { g.fillStyle = col; g.font = "bold 12px system-ui"; g.fillText(label, px + 9, py - 6); }
}
function drawMap() {
  const c = $("map"), g = c.getContext("2d");
  g.drawImage(S.base, 0, 0);
  if (S.A != null) ring(g, S.info.xy[S.A], "#059669", "A");
  if (S.B != null) ring(g, S.info.xy[S.B], "#7c3aed", "B");
  if (S.hover >= 0) ring(g, S.info.xy[S.hover], "#6b7280");
  const m = markerXY();
  if (m) {
    const [px, py] = toPx(m[0], m[1]);
    g.strokeStyle = "#111"; g.lineWidth = 2;
    g.beginPath(); g.moveTo(px - 9, py); g.lineTo(px + 9, py); g.moveTo(px, py - 9); g.lineTo(px, py + 9); g.stroke();
  }
}
function canvasPoint(ev) {
  const c = $("map"), r = c.getBoundingClientRect();
  return [((ev.clientX - r.left) / r.width) * c.width, ((ev.clientY - r.top) / r.height) * c.height];
}
function nearest(px, py, radius) {
  const xy = S.info.xy;
  let best = -1, bd = radius * radius;
  for (let i = 0; i < xy.length; i++) {
    const [qx, qy] = toPx(xy[i][0], xy[i][1]);
    const d = (qx - px) ** 2 + (qy - py) ** 2;
    if (d < bd) { bd = d; best = i; }
  }
  return best;
}
function showTip(i, ev) {
  const tip = $("tooltip");
  if (i < 0) { tip.hidden = true; return; }
  const wrap = $("mapwrap").getBoundingClientRect();
  $("tipimg").src = `/api/image?i=${i}`;
  const names = S.info.class_names, lab = S.info.labels ? S.info.labels[i] : null;
  $("tiptext").textContent = `#${i}` + (lab != null ? ` · ${names[lab] ?? lab}` : "");
  tip.hidden = false;
  tip.style.left = `${Math.min(ev.clientX - wrap.left + 14, wrap.width - 100)}px`;
  tip.style.top = `${Math.max(ev.clientY - wrap.top - 110, 0)}px`;
}

// -- decoding: at most one request in flight; the newest wanted point wins ---------------------------------
function decodeQuery(q) { S.pending = q; if (!S.busy) pump(); }
function shiftParam() {
  if (!S.vec || S.strength === 0) return "";
  return "&shift=" + S.vec.map((v) => (v * S.strength).toPrecision(5)).join(",");
}
async function pump() {
  if (!S.pending) return;
  const q = S.pending; S.pending = null; S.busy = true;
  try {
    const r = await api(`/api/decode?${q.query}${shiftParam()}${labelParam()}`);
    const lat = r.headers.get("X-Latent");
    $("edited").textContent = S.vec && S.strength !== 0 ? `+ ${S.strength.toFixed(2)} × the attribute vector` : "";
    const blob = await r.blob();
    await showDecoded(blob);
    if (lat && q.setZ) {
      S.z = lat.split(",").map(Number);
      syncSliders();
    }
    status("");
  } catch (e) {
    status(e.message);
  } finally {
    S.busy = false;
    drawMap();
    if (S.pending) pump();
  }
}
function showDecoded(blob) {
  return new Promise((resolve) => {
    const img = $("decoded"), old = img.src, url = URL.createObjectURL(blob);
    img.onload = img.onerror = () => {
      if (old.startsWith("blob:")) URL.revokeObjectURL(old);
      img.dataset.seq = String(Number(img.dataset.seq) + 1);
      resolve();
    };
    img.src = url;
  });
}
function decodeCurrent() { if (S.z) decodeQuery({ query: "z=" + S.z.map((v) => v.toPrecision(6)).join(","), setZ: false }); }
function selectImage(i) {
  const n = S.info.n;
  if (!(i >= 0 && i < n)) { status(`image # must be in 0..${n - 1}`); return; }
  S.index = i; $("idx").value = i;
  if (S.info.conditional && S.info.labels) { S.label = S.info.labels[i]; $("cls").value = String(S.label); }
  $("where").textContent = `image #${i}'s ${S.info.quantized ? "code map" : "posterior mean"}` + (S.info.labels ? ` (class ${S.info.class_names[S.info.labels[i]]})` : "");
  decodeQuery({ query: `i=${i}`, setZ: true });
}
function decodeAt(px, py) {
  const [x, y] = fromPx(px, py);
  S.index = null; S.clicked = [x, y];
  const how = { identity: "the latent point", "pca-inverse": "the PCA inverse transform of", nearest: "the code of the image nearest to" }[S.info.inverse];
  $("where").textContent = `${how} (${fmt(x)}, ${fmt(y)})`;
  if (S.info.method === "identity") { S.z = [x, y]; syncSliders(); decodeCurrent(); return; }
  decodeQuery({ query: `at=${x.toPrecision(6)},${y.toPrecision(6)}`, setZ: true });
}

// -- traversal sliders ---------------------------------------------------------------------------------
function buildSliders() {
  const box = $("sliders"), ranges = S.info.ranges;
  box.innerHTML = "";
  for (let d = 0; d < S.info.latent_dim; d++) {
    const lab = document.createElement("label"); lab.textContent = `z${d}`; lab.htmlFor = `z${d}`;
    const s = document.createElement("input");
    Object.assign(s, { type: "range", id: `z${d}`, min: ranges[d][0], max: ranges[d][1], step: (ranges[d][1] - ranges[d][0]) / 200, value: 0 });
    s.className = "zslider"; s.dataset.dim = d;
    const out = document.createElement("output"); out.id = `zo${d}`;
    s.addEventListener("input", () => {
      if (!S.z) return;
      S.z[d] = Number(s.value); out.textContent = fmt(S.z[d]);
      S.index = null; $("where").textContent = `traversal of z${d}`;
      decodeCurrent(); drawMap();
    });
    box.append(lab, s, out);
  }
}
function syncSliders() {
  S.z.forEach((v, d) => { const s = $(`z${d}`); if (s) { s.value = v; $(`zo${d}`).textContent = fmt(v); } });
}

// -- interpolation, attributes, samples ------------------------------------------------------------------
async function showStrip(imgId, path) {
  try {
    const blob = await (await api(path)).blob();
    const img = $(imgId), old = img.src;
    img.src = URL.createObjectURL(blob);
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
    status("");
  } catch (e) { status(e.message); }
}
function interpolate() {
  $("labA").textContent = `A: ${S.A ?? "–"}`; $("labB").textContent = `B: ${S.B ?? "–"}`;
  drawMap();
  if (S.A == null || S.B == null) return;
  showStrip("interp", `/api/interpolate?a=${S.A}&b=${S.B}&steps=${$("isteps").value}&mode=${$("imode").value}${labelParam()}`);
}
async function updateVector() {
  const sets = $("amodeSets").checked;
  $("asets").hidden = !sets; $("aclasses").hidden = sets;
  $("nFrom").textContent = S.setFrom.length; $("nTo").textContent = S.setTo.length;
  let q;
  if (sets) {
    if (!S.setFrom.length || !S.setTo.length) {
      const had = S.vec && S.strength !== 0;
      S.vec = null; $("attrnote").textContent = "Pick images for both sets (with the buttons, for the current image).";
      if (had) decodeCurrent();
      return;
    }
    q = `from_set=${S.setFrom.join(",")}&to_set=${S.setTo.join(",")}`;
  } else {
    if (!S.info.labels) { S.vec = null; $("attrnote").textContent = "These images have no labels: pick two sets of images instead."; return; }
    q = `from=${$("afrom").value}&to=${$("ato").value}`;
  }
  try {
    const v = await (await api(`/api/attribute?${q}`)).json();
    S.vec = v.vector;
    $("attrnote").textContent = `current point + strength × vector (‖vector‖ = ${v.norm.toFixed(2)}): “to” mean code − “from” mean code.`;
    if (S.strength !== 0) decodeCurrent();
  } catch (e) { status(e.message); }
}
function sample() {
  S.seed += 1;
  showStrip("samples", `/api/samples?sampler=${$("sampler").value}&n=16&seed=${S.seed}&temperature=${$("temp").value}${labelParam()}`);
}

// -- start ---------------------------------------------------------------------------------------------
function fillSelect(sel, names) {
  sel.innerHTML = "";
  names.forEach((n, k) => { const o = document.createElement("option"); o.value = String(k); o.textContent = n; sel.append(o); });
}
async function start() {
  let info;
  try { info = await (await api("/api/info")).json(); } catch (e) { status(`cannot load the map: ${e.message}`); return; }
  S.info = info;
  $("meta").textContent = `${info.run} · ${info.checkpoint} (epoch ${info.epoch}) · ${info.n} ${info.split} images · ${info.latent_dim}-D latent · ${info.image_shape.join("×")}`;
  const kind = { identity: "the 2-D latent itself", pca: "PCA", tsne: "t-SNE", umap: "UMAP" }[info.method];
  $("mapkind").textContent = `(${kind})`;
  const notes = {
    identity: "Axes are z0 and z1. Click or drag anywhere to decode that point; hover an image to see it; click a dot to take its posterior mean.",
    "pca-inverse": `PCA of the ${info.latent_dim}-D codes` + (info.pca ? ` (axes explain ${(100 * info.pca.explained[0]).toFixed(0)}% and ${(100 * info.pca.explained[1]).toFixed(0)}% of the variance)` : "") +
      ". A click or drag decodes the PCA inverse transform of the point: the code in the plane of the two leading components, the other directions at the data mean. Click a dot to take that image's own code.",
    nearest: `${kind} has no inverse: a click decodes the code of the nearest image. Use the sliders to move off the data.`,
  };
  $("mapnote").textContent = notes[info.inverse];
  if (info.labels) {
    $("legend").innerHTML = "";
    info.class_names.forEach((n, k) => { const s = document.createElement("span"); s.style.setProperty("--c", colour(k)); s.textContent = n; $("legend").append(s); });
  }
  if (info.conditional) { $("clsrow").hidden = false; fillSelect($("cls"), info.class_names); }
  if (info.labels) { fillSelect($("afrom"), info.class_names); fillSelect($("ato"), info.class_names); $("ato").value = String(Math.min(1, info.class_names.length - 1)); }
  else { $("amodeSets").checked = true; }
  if (!info.slerp) $("imode").querySelector('[value="slerp"]').disabled = true;
  const sel = $("sampler");
  Object.entries(info.samplers).forEach(([name, what]) => { const o = document.createElement("option"); o.value = name; o.textContent = what; sel.append(o); });
  if (info.sampler_note) { $("samplenote").hidden = false; $("samplenote").textContent = `Code prior: ${info.sampler_note}.`; }
  if (info.quantized) {
    const q = info.quantized;
    $("vqnote").hidden = false;
    $("reset").textContent = "reset to its code map";
    $("vqnote").textContent = `A VQ latent: ${q.positions} position(s) × ${q.code_dim} dims, ${q.codebook_size} codes. Every point (map, sliders, interpolation, attribute shift) ` +
      "decodes through the nearest codebook entry at each position, so the image changes in steps.";
  }
  $("idx").max = info.n - 1;
  setupView(); drawBase(); buildSliders(); drawMap();

  const c = $("map");
  c.addEventListener("pointerdown", (ev) => {
    const [px, py] = canvasPoint(ev);
    S.drag = true; c.setPointerCapture(ev.pointerId);
    const i = nearest(px, py, 5);
    if (i >= 0) selectImage(i); else decodeAt(px, py);
  });
  c.addEventListener("pointermove", (ev) => {
    const [px, py] = canvasPoint(ev);
    if (S.drag) { decodeAt(px, py); showTip(-1); return; }
    const i = nearest(px, py, 6);
    if (i !== S.hover) { S.hover = i; drawMap(); }
    showTip(i, ev);
  });
  const stop = () => { S.drag = false; };
  c.addEventListener("pointerup", stop);
  c.addEventListener("pointercancel", stop);
  c.addEventListener("pointerleave", () => { S.hover = -1; showTip(-1); drawMap(); });

  $("reset").addEventListener("click", () => selectImage(Number($("idx").value)));
  $("idx").addEventListener("change", () => selectImage(Number($("idx").value)));
  $("cls").addEventListener("change", () => { S.label = Number($("cls").value); decodeCurrent(); interpolate(); });
  $("setA").addEventListener("click", () => { if (S.index == null) { status("pick an image on the map first (click a dot)"); return; } S.A = S.index; interpolate(); });
  $("setB").addEventListener("click", () => { if (S.index == null) { status("pick an image on the map first (click a dot)"); return; } S.B = S.index; interpolate(); });
  $("imode").addEventListener("change", interpolate);
  $("isteps").addEventListener("change", interpolate);
  document.querySelectorAll('input[name="amode"]').forEach((r) => r.addEventListener("change", updateVector));
  $("afrom").addEventListener("change", updateVector);
  $("ato").addEventListener("change", updateVector);
  const addTo = (list) => { if (S.index == null) { status("pick an image on the map first (click a dot)"); return; } if (!list.includes(S.index)) list.push(S.index); updateVector(); };
  $("addFrom").addEventListener("click", () => addTo(S.setFrom));
  $("addTo").addEventListener("click", () => addTo(S.setTo));
  $("clearSets").addEventListener("click", () => { S.setFrom = []; S.setTo = []; updateVector(); });
  $("strength").addEventListener("input", () => {
    S.strength = Number($("strength").value); $("strengthOut").textContent = S.strength.toFixed(2);
    if (S.strength !== 0 && !S.vec) updateVector(); else decodeCurrent();
  });
  $("sample").addEventListener("click", sample);

  if (info.conditional) S.label = info.labels ? info.labels[0] : 0;
  selectImage(0);
  updateVector();
  c.dataset.ready = "1";
}
start();
