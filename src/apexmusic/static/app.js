// apexmusic web page: upload one song (or two), draw scores and the segment timeline as SVG.
// No libraries and no network beyond this server.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const SONG_COLOURS = { a: "#3b6fe0", b: "#e0793b" };
const TASK_COLOURS = ["#3b6fe0", "#8e44ad", "#16a085", "#e67e22", "#c0392b", "#2c3e50", "#c9a000"];
const LABELS = {
  score_streams: "Streams", score_likes: "Likes", coherence: "Coherence", musicality: "Musicality",
  memorability: "Memorability", clarity: "Clarity", naturalness: "Naturalness",
};
const NOVELTY_WARN = 3; // RMS z-score of the input embedding; used only for models without a domain alarm
const NOT_TRAINED = "not trained";
let MODEL = null;

const $ = (id) => document.getElementById(id);
const label = (task) => LABELS[task] || task;
const fmt = (x) => Number(x).toFixed(2);
const served = (pred, task) => pred.scores[task] !== null && pred.scores[task] !== undefined;
const pct = (x) => `${Math.round(100 * x)}%`;

function el(tag, attrs = {}, parent = null, text = null) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function html(tag, attrs = {}, parent = null, text = null) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function setStatus(message, isError = false) {
  $("status").textContent = message;
  $("status").className = isError ? "error" : "";
  if (isError) clearResults();
}

// An error replaces the previous song's results: numbers left on screen under it would read as
// this song's.
function clearResults() {
  const results = $("results");
  results.hidden = true;
  results.removeAttribute("data-ready");
  $("verdict").hidden = true;
  for (const id of ["verdict", "legend", "bars", "tags", "timeline"]) $(id).replaceChildren();
  document.querySelector("#score-table tbody").replaceChildren();
}

async function loadModel() {
  try {
    const r = await fetch("/v1/model");
    MODEL = await r.json();
    const enc = MODEL.encoder_spec || {};
    $("model-info").textContent =
      `model ${MODEL.model_id} · encoder ${enc.encoder || enc.name || "?"} · ${MODEL.tasks.length} scores · ` +
      `uncertainty from ${MODEL.mc_samples} dropout samples`;
    showProvenance(MODEL);
  } catch (e) {
    $("model-info").textContent = "model card unavailable";
  }
}

function showProvenance(model) {
  const prov = model.provenance || {};
  const box = $("provenance");
  let text = prov.notice || "training data not recorded";
  if (prov.simulated) text = text.charAt(0).toUpperCase() + text.slice(1);
  const notServed = (model.tasks || []).filter((t) => !(model.served_tasks || model.tasks).includes(t));
  if (notServed.length) text += ` · not trained: ${notServed.map(label).join(", ")}`;
  box.textContent = text;
  box.className = prov.simulated ? "provenance simulated" : "provenance";
  box.setAttribute("data-simulated", String(Boolean(prov.simulated)));
  box.hidden = false;
}

function range(task) {
  return (MODEL && MODEL.ranges && MODEL.ranges[task]) || (task.startsWith("score_") ? [0, 100] : [1, 5]);
}

async function submit(event) {
  event.preventDefault();
  const a = $("file-a").files[0];
  const b = $("file-b").files[0];
  if (!a) { setStatus("Choose a song first.", true); return; }
  const limitMb = MODEL && MODEL.limits ? MODEL.limits.max_upload_mb : null;
  for (const f of [a, b].filter(Boolean)) {
    if (limitMb && f.size > limitMb * 1024 * 1024) {
      setStatus(`${f.name} is larger than the ${limitMb} MB upload limit.`, true);
      return;
    }
  }
  const form = new FormData();
  let url = "/v1/predict";
  if (b) { form.append("a", a); form.append("b", b); url = "/v1/compare"; }
  else form.append("file", a);
  $("submit").disabled = true;
  setStatus(b ? "Scoring both songs…" : "Scoring…");
  const t0 = performance.now();
  try {
    const r = await fetch(url, { method: "POST", body: form });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) {
      const wait = r.headers.get("retry-after");
      setStatus(`Error ${r.status}: ${body.detail || r.statusText}${wait ? ` (retry in ${wait} s)` : ""}`, true);
      return;
    }
    const songs = b ? [["a", body.a], ["b", body.b]] : [["a", body]];
    render(songs, b ? body : null);
    setStatus(`Done in ${((performance.now() - t0) / 1000).toFixed(1)} s.`);
  } catch (e) {
    setStatus(`Request failed: ${e.message}`, true);
  } finally {
    $("submit").disabled = false;
  }
}

function render(songs, comparison) {
  $("results").hidden = false;
  const verdict = $("verdict");
  verdict.hidden = !comparison;
  verdict.replaceChildren();
  if (comparison) {
    const p = comparison.prob_a;
    html("span", {}, verdict, "P(listeners prefer A over B) = ");
    html("strong", { id: "prob-a", "data-value": String(p) }, verdict, `${(100 * p).toFixed(1)}%`);
    html("span", {}, verdict, p === 0.5 ? " — a toss-up" : ` — ${p > 0.5 ? "A" : "B"} is favoured`);
    html("span", { class: "hint" }, verdict,
      comparison.method === "comparator" ? "  (arena-trained comparator)" : "  (fallback: standardised score differences, uncalibrated)");
  }
  drawLegend(songs);
  drawBars(songs);
  fillTable(songs);
  drawTags(songs);
  drawTimelines(songs);
  $("results").setAttribute("data-ready", String(Date.now()));
}

function drawLegend(songs) {
  const legend = $("legend");
  legend.replaceChildren();
  for (const [key, pred] of songs) {
    const s = html("span", { style: `--c:${SONG_COLOURS[key]}` }, legend,
      `${key.toUpperCase()}: ${pred.path || pred.id} (${Math.round(pred.duration_s)} s)`);
    s.title = pred.id;
  }
  for (const [key, pred] of songs) {
    if (pred.in_domain === false) {
      html("p", { class: "warn domain-alarm", "data-song": key }, legend,
        `${key.toUpperCase()} is unlike the songs this model was trained on (distance ` +
        `${fmt(pred.domain_distance)}; training-like songs sit near 1): its scores are extrapolations, ` +
        `and their intervals do not hold for it.`);
    } else if (pred.in_domain == null && pred.novelty != null && pred.novelty > NOVELTY_WARN) {
      html("p", { class: "warn", "data-song": key }, legend,
        `${key.toUpperCase()} is unlike the training data (novelty ${pred.novelty.toFixed(1)}; ` +
        `about 1 is typical): its scores are extrapolations.`);
    }
  }
}

function drawBars(songs) {
  const tasks = Object.keys(songs[0][1].scores);
  const left = 120, barW = 560, right = 150, row = songs.length > 1 ? 46 : 34, top = 22;
  const width = left + barW + right, height = top + tasks.length * row + 6;
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", id: "bar-chart",
    role: "img", "aria-label": "scores with uncertainty" });
  for (let g = 0; g <= 4; g++) {
    const x = left + (g / 4) * barW;
    el("line", { x1: x, x2: x, y1: top - 6, y2: height - 4, stroke: "#e3e6ee" }, svg);
    el("text", { x, y: 12, "font-size": 11, fill: "#6b7385", "text-anchor": "middle" }, svg, `${g * 25}%`);
  }
  const bh = songs.length > 1 ? 14 : 18;
  tasks.forEach((task, i) => {
    const [lo, hi] = range(task);
    const y0 = top + i * row + (row - bh * songs.length - 4 * (songs.length - 1)) / 2;
    el("text", { x: left - 10, y: top + i * row + row / 2 + 4, "font-size": 13, "text-anchor": "end",
      fill: "#1c2230" }, svg, label(task));
    songs.forEach(([key, pred], j) => {
      const v = pred.scores[task], sd = pred.uncertainty[task] || 0;
      const frac = (x) => Math.max(0, Math.min(1, (x - lo) / (hi - lo)));
      const y = y0 + j * (bh + 4);
      if (!served(pred, task)) {
        el("text", { x: left + 4, y: y + bh / 2 + 4, "font-size": 12, fill: "#6b7385", class: "bar-label",
          "data-song": key, "data-task": task }, svg, NOT_TRAINED);
        return;
      }
      const iv = (pred.intervals || {})[task];
      if (iv) {
        el("rect", { x: left + frac(iv.lo) * barW, y: y - 2, width: Math.max(1, (frac(iv.hi) - frac(iv.lo)) * barW),
          height: bh + 4, fill: SONG_COLOURS[key], opacity: 0.18, class: "interval", "data-song": key,
          "data-task": task }, svg);
      }
      el("rect", { x: left, y, width: Math.max(1, frac(v) * barW), height: bh, rx: 3,
        fill: SONG_COLOURS[key], opacity: 0.85, class: "bar", "data-song": key, "data-task": task,
        "data-value": String(v) }, svg);
      if (sd > 0) {
        const x1 = left + frac(v - sd) * barW, x2 = left + frac(v + sd) * barW, ym = y + bh / 2;
        el("line", { x1, x2, y1: ym, y2: ym, stroke: "#1c2230", "stroke-width": 1.5 }, svg);
        for (const x of [x1, x2]) el("line", { x1: x, x2: x, y1: ym - 5, y2: ym + 5, stroke: "#1c2230", "stroke-width": 1.5 }, svg);
      }
      el("text", { x: left + barW + 8, y: y + bh / 2 + 4, "font-size": 12, fill: "#1c2230",
        class: "bar-label", "data-song": key, "data-task": task }, svg, `${fmt(v)} ± ${fmt(sd)}`);
    });
  });
  $("bars").replaceChildren(svg);
}

function fillTable(songs) {
  const table = $("score-table");
  const head = table.tHead.rows[0];
  head.replaceChildren();
  html("th", {}, head, "score");
  const level = songs[0][1].interval_level;
  for (const [key] of songs) {
    html("th", {}, head, `${key.toUpperCase()} score`);
    if (level != null) html("th", {}, head, `${key.toUpperCase()} ${pct(level)} interval`);
    html("th", {}, head, `${key.toUpperCase()} ± sd`);
  }
  html("th", {}, head, "range");
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const task of Object.keys(songs[0][1].scores)) {
    const tr = html("tr", {}, body);
    html("td", {}, tr, label(task));
    for (const [key, pred] of songs) {
      if (!served(pred, task)) {
        html("td", { class: "not-trained", colspan: level != null ? 3 : 2, "data-song": key, "data-task": task,
          "data-kind": "score", "data-value": "" }, tr, NOT_TRAINED);
        continue;
      }
      html("td", { class: "num", "data-song": key, "data-task": task, "data-kind": "score",
        "data-value": String(pred.scores[task]) }, tr, fmt(pred.scores[task]));
      if (level != null) {
        const iv = (pred.intervals || {})[task];
        html("td", { class: "num", "data-song": key, "data-task": task, "data-kind": "interval",
          "data-lo": iv ? String(iv.lo) : "", "data-hi": iv ? String(iv.hi) : "" }, tr,
          iv ? `${fmt(iv.lo)}–${fmt(iv.hi)}` : "–");
      }
      html("td", { class: "num", "data-song": key, "data-task": task, "data-kind": "std",
        "data-value": String(pred.uncertainty[task]) }, tr, fmt(pred.uncertainty[task]));
    }
    const [lo, hi] = range(task);
    html("td", {}, tr, `${lo}–${hi}`);
  }
}

function drawTags(songs) {
  const box = $("tags");
  box.replaceChildren();
  for (const [key, pred] of songs) {
    if (!pred.tags || !pred.tags.length) continue;
    const p = html("p", { class: "tags", "data-song": key }, box, songs.length > 1 ? `${key.toUpperCase()} sounds like: ` : "Sounds like: ");
    for (const t of pred.tags) html("span", { class: "chip" }, p, `${t.tag} ${(100 * t.prob).toFixed(0)}%`);
  }
}

function drawTimelines(songs) {
  const box = $("timeline");
  box.replaceChildren();
  for (const [key, pred] of songs) {
    if (songs.length > 1) html("h3", {}, box, `${key.toUpperCase()}: ${pred.path || pred.id}`);
    const tasks = Object.keys(pred.scores).filter((t) => served(pred, t));
    const groups = [
      ["Popularity (0–100)", tasks.filter((t) => t.startsWith("score_"))],
      ["Aesthetics (1–5)", tasks.filter((t) => !t.startsWith("score_"))],
    ].filter(([, ts]) => ts.length);
    const wrap = html("div", { class: "timeline", "data-song": key }, box);
    for (const [title, ts] of groups) wrap.appendChild(linePlot(pred, title, ts, tasks));
  }
}

function linePlot(pred, title, ts, allTasks) {
  const W = 820, H = 200, L = 48, R = 150, T = 22, B = 30;
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", class: "timeline-plot", role: "img",
    "aria-label": title });
  const segs = pred.timeline;
  const tmax = Math.max(pred.duration_s, ...segs.map((s) => s.end_s), 1);
  const [lo, hi] = range(ts[0]);
  const x = (t) => L + (t / tmax) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  el("text", { x: L, y: 14, "font-size": 13, "font-weight": 600, fill: "#1c2230" }, svg, title);
  for (let g = 0; g <= 4; g++) {
    const v = lo + (g / 4) * (hi - lo);
    el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e3e6ee" }, svg);
    el("text", { x: L - 6, y: y(v) + 4, "font-size": 11, "text-anchor": "end", fill: "#6b7385" }, svg,
      Number.isInteger(v) ? String(v) : v.toFixed(1));
  }
  const step = tmax > 600 ? 120 : tmax > 240 ? 60 : 30;
  for (let t = 0; t <= tmax + 1e-6; t += step) {
    el("text", { x: x(t), y: H - 10, "font-size": 11, "text-anchor": "middle", fill: "#6b7385" }, svg,
      `${Math.floor(t / 60)}:${String(Math.round(t % 60)).padStart(2, "0")}`);
  }
  ts.forEach((task, k) => {
    const colour = TASK_COLOURS[allTasks.indexOf(task) % TASK_COLOURS.length];
    const pts = segs.map((s) => [x((s.start_s + s.end_s) / 2), y(s.scores[task])]);
    if (pts.length > 1) {
      el("polyline", { points: pts.map((p) => p.join(",")).join(" "), fill: "none", stroke: colour,
        "stroke-width": 2, "data-task": task }, svg);
    }
    segs.forEach((s, i) => el("circle", { cx: pts[i][0], cy: pts[i][1], r: 3.5, fill: colour,
      class: "seg-point", "data-task": task, "data-value": String(s.scores[task]) }, svg));
    const ly = T + 8 + k * 18;
    el("line", { x1: W - R + 14, x2: W - R + 32, y1: ly, y2: ly, stroke: colour, "stroke-width": 3 }, svg);
    el("text", { x: W - R + 38, y: ly + 4, "font-size": 12, fill: "#1c2230" }, svg, label(task));
  });
  return svg;
}

$("upload-form").addEventListener("submit", submit);
loadModel();
