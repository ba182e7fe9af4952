"use strict";
// The overview table, the comparison view and the suite tables, rendered from JSON embedded in the page
// (and, for the comparison, from data/compare-<k>.js files loaded with <script>: both work from file://).
// Text always goes in through textContent, never innerHTML.
function readData(id) {
  const el = document.getElementById(id);
  return el ? JSON.parse(el.textContent) : null;
}
// Numbers in units a person reads, as results/units.py formats them (the scales come from there, in the page's
// data as "scales": unit -> [[from, factor, label], ...]): value and stderr in one display unit, the stderr with
// one or two significant digits (PDG rule), the value rounded to the same place; four significant digits alone.
let SCALES = {};
function roundAway(v, places) {  // half away from zero, as DuckDB's round and results/units.py's _round
  const r = places >= 0 ? Math.sign(v) * Math.floor(Math.abs(v) * 10 ** places + 0.5) / 10 ** places
    : Math.sign(v) * Math.floor(Math.abs(v) / 10 ** -places + 0.5) * 10 ** -places;
  return r + 0;
}
function scaleFor(unit, mag) {
  const scales = SCALES[unit || ""];
  if (!scales) return [0, 1, unit || ""];
  if (mag === 0) return scales.find(s => s[1] === 1) || scales[0];
  let chosen = scales[0];
  scales.forEach(s => { if (mag >= s[0]) chosen = s; });
  return chosen;
}
function decimals(se) {
  let exp = Math.floor(Math.log10(se));
  let lead = Math.round(se / 10 ** (exp - 2));
  if (lead >= 1000) { exp += 1; lead = 100; }
  if (lead >= 950) return -exp;
  return (lead <= 354 ? 2 : 1) - 1 - exp;
}
function sig(v) {  // like Python's "%.4g"
  if (v === 0) return "0";
  const e = Math.floor(Math.log10(Math.abs(Number(v.toPrecision(4)))));
  if (e < -4 || e >= 4) {
    const [m, x] = v.toExponential(3).split("e");
    const n = Number(x);
    return m.replace(/\.?0+$/, "") + "e" + (n < 0 ? "-" : "+") + String(Math.abs(n)).padStart(2, "0");
  }
  return String(Number(v.toPrecision(4)));
}
function fixed(v, places) { return roundAway(v, places).toFixed(Math.max(places, 0)); }
function parts(v, se, unit) {  // [value text, stderr text or null, display unit]
  const hasSe = se !== null && se !== undefined && Number.isFinite(se);
  const s = hasSe ? Math.abs(se) : 0;
  const [, factor, label] = scaleFor(unit, Math.max(Math.abs(v), s));
  if (!hasSe) return [sig(v / factor), null, label];
  if (s === 0) return [sig(v / factor), "0", label];
  const places = decimals(s / factor);
  return [fixed(v / factor, places), fixed(s / factor, places), label];
}
function fmtQ(v, se, unit) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  const [a, b, label] = parts(v, se, unit);
  return (b === null ? a : a + " ± " + b) + (label ? " " + label : "");
}
function fmt(v, unit) { return fmtQ(v, null, unit); }
function fmtErr(v, se, unit) {  // the stderr alone, in the unit its value is shown in
  if (se === null || se === undefined) return "—";
  const [, b, label] = parts(v === null || v === undefined ? 0 : v, se, unit);
  return b + (label ? " " + label : "");
}
function withErr(v, se, unit, est, upper) {
  return (est ? "~" : "") + (upper ? "≤" : "") + fmtQ(v, se, unit);
}
function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}
function linkCell(tr, href, text) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  cell(tr, "").appendChild(a);
}
function compareValues(x, y) {
  if (x === y) return 0;
  if (x === null || x === undefined) return 1;  // missing numbers sort last in both directions
  if (y === null || y === undefined) return -1;
  return x < y ? -1 : 1;
}
function initOverview() {
  const data = readData("site-data");
  const table = document.getElementById("overview");
  if (!data || !table) return;
  const rows = data.paths.map(r => Object.fromEntries(data.keys.map((k, i) => [k, r[i]])));
  SCALES = data.scales || {};
  // a failed step marks every empty column of its path, a failed suite run that suite's columns
  const failure = (p, suite) => p.failed_step ? "✗ failed: " + p.failed_step
    : (p.failed_suites || []).includes(suite) ? "✗ failed: " + suite : null;
  const heads = data.headlines.filter(h => rows.some(p => (p[h.name] !== null && p[h.name] !== undefined)
                                                          || (p.failed_suites || []).includes(h.suite)));
  let sortKey = "path_name", sortDir = 1, limit = 200;
  const f = { hw: document.getElementById("f-hw"), base: document.getElementById("f-base"),
              tech: document.getElementById("f-tech"), text: document.getElementById("f-text") };
  const thead = table.querySelector("thead tr");
  const cols = [{ key: "path_name", label: "path" }, { key: "hardware_profile", label: "hardware" },
                { key: "base", label: "base" }].concat(heads.map(h => ({ key: h.name,
                label: h.label + " " + (h.higher_is_better ? "↑" : "↓"), num: true })));  // cells carry units
  cols.forEach(c => {
    const th = document.createElement("th");
    th.textContent = c.label;
    th.dataset.key = c.key;
    if (c.num) th.className = "num";
    th.addEventListener("click", () => {
      sortDir = sortKey === c.key ? -sortDir : 1;
      sortKey = c.key;
      render();
    });
    thead.appendChild(th);
  });
  Object.values(f).forEach(el => el && el.addEventListener("input", () => { limit = 200; render(); }));
  const more = document.getElementById("more");
  more.addEventListener("click", () => { limit += 500; render(); });
  function keep(p) {
    if (f.hw.value && p.hardware_profile !== f.hw.value) return false;
    if (f.base.value && (p.base || "") !== f.base.value) return false;
    if (f.tech.value && !(p.techniques || []).includes(f.tech.value)) return false;
    const q = f.text.value.trim().toLowerCase();
    return !q || p.path_name.toLowerCase().includes(q);
  }
  function render() {
    const shown = rows.filter(keep).sort((a, b) => {
      const c = compareValues(a[sortKey], b[sortKey]);
      return a[sortKey] === null || a[sortKey] === undefined || b[sortKey] === null || b[sortKey] === undefined
        ? c : c * sortDir;
    });
    thead.querySelectorAll("th").forEach(th => {
      th.classList.toggle("sorted-asc", th.dataset.key === sortKey && sortDir > 0);
      th.classList.toggle("sorted-desc", th.dataset.key === sortKey && sortDir < 0);
    });
    const tbody = table.querySelector("tbody");
    tbody.replaceChildren();
    shown.slice(0, limit).forEach(p => {
      const tr = document.createElement("tr");
      linkCell(tr, "paths/" + p.page + ".html", p.path_name);
      cell(tr, p.hardware_profile);
      cell(tr, p.base || "—");
      heads.forEach(h => {
        // markers: ~ estimated, ≤ an upper bound, ⚠ measured while other processes loaded the CPU
        const est = p[h.name + "_estimate"], upper = p[h.name + "_upper_bound"], busy = p[h.name + "_under_load"];
        const load = p[h.name + "_load"];
        const failed = p[h.name] === null || p[h.name] === undefined ? failure(p, h.suite) : null;
        const td = cell(tr, failed || withErr(p[h.name], p[h.name + "_stderr"], h.unit, est, upper) + (busy ? " ⚠" : ""),
                        "num" + (failed ? " failed" : "") + (est ? " est" : "") + (busy ? " under-load" : "")
                        + (upper ? " upper-bound" : ""));
        const notes = [];
        if (est) notes.push("estimated, not measured");
        if (upper) notes.push(data.notes.upper_bound);
        if (busy) notes.push(data.notes.load.replace("{load}", load === null || load === undefined
          ? "over 0.25" : Number(load.toPrecision(2)).toString()));
        if (notes.length) td.title = notes.join("; ");
        addVsBase(td, p, h);
      });
      tbody.appendChild(tr);
    });
    document.getElementById("count").textContent = shown.length + " of " + rows.length + " paths" +
      (shown.length > limit ? " (first " + limit + " shown)" : "");
    more.style.display = shown.length > limit ? "" : "none";
  }
  render();
}
// the change vs the path's base (computed in leaderboard/analysis.py): a second line in the cell; a path with
// steps whose base was not measured gets "—"; a base path itself nothing
function addVsBase(td, p, h) {
  if (!(p.techniques || []).length) return;
  const ch = p[h.name + "_vs_base"];
  if (!ch && (p[h.name] === null || p[h.name] === undefined)) return;
  const span = document.createElement("span");
  span.className = "vs-base";
  span.textContent = ch ? ch.text : "vs base —";
  span.title = ch ? ch.title : (p.base_path ? "vs base path " + p.base_path + ": not measured"
                                            : "the base was not measured (no base path on this hardware)");
  td.appendChild(document.createElement("br"));
  td.appendChild(span);
}
function loadScript(src) {
  return new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = src;
    s.onload = resolve;
    s.onerror = () => reject(new Error("cannot load " + src));
    document.head.appendChild(s);
  });
}
function initCompare() {
  const data = readData("compare-data");
  if (!data) return;
  SCALES = data.scales || {};
  const a = document.getElementById("pick-a"), b = document.getElementById("pick-b");
  const shard = {};
  data.paths.forEach(([id, name, hw, k]) => {
    shard[id] = k;
    [a, b].forEach(sel => {
      const o = document.createElement("option");
      o.value = id;
      o.textContent = name + " [" + hw + "]";
      sel.appendChild(o);
    });
  });
  const q = new URLSearchParams(location.search);
  if (q.get("a") in shard) a.value = q.get("a");
  if (q.get("b") in shard) b.value = q.get("b");
  else if (data.paths.length > 1) b.value = data.paths[a.selectedIndex === 0 ? 1 : 0][0];
  async function render() {
    const need = [...new Set([shard[a.value], shard[b.value]])];
    await Promise.all(need.map(k => loadScript("data/compare-" + k + ".js")));
    // data file rows: [key index, value, stderr]; keys: [suite, task, metric, unit, higher_is_better, method, estimate]
    const index = rows => Object.fromEntries(rows.map(r => [r[0], r]));
    const ma = index(window.SLM_COMPARE[a.value] || []), mb = index(window.SLM_COMPARE[b.value] || []);
    const tbody = document.querySelector("#comparison tbody");
    tbody.replaceChildren();
    const kids = Object.keys(ma).filter(k => k in mb).map(Number).sort((x, y) => x - y);
    kids.forEach(kid => {
      const [suite, task, metric, unit, hib, , est] = data.keys[kid];
      const x = ma[kid], y = mb[kid], tr = document.createElement("tr");
      cell(tr, suite + "/" + task + "/" + metric + (hib ? " ↑" : " ↓"));
      cell(tr, unit);
      cell(tr, withErr(x[1], x[2], unit, est), "num" + (est ? " est" : ""));
      cell(tr, withErr(y[1], y[2], unit, est), "num" + (est ? " est" : ""));
      const d = x[1] === null || y[1] === null ? null : y[1] - x[1];
      const good = hib ? d > 0 : d < 0;
      cell(tr, d === null ? "—" : (d > 0 ? "+" : "") + fmt(d, unit), "num " + (!d ? "" : good ? "better" : "worse"));
      tbody.appendChild(tr);
    });
    document.getElementById("compare-count").textContent = kids.length + " metrics in common";
    history.replaceState(null, "", "?a=" + encodeURIComponent(a.value) + "&b=" + encodeURIComponent(b.value));
  }
  a.addEventListener("change", render);
  b.addEventListener("change", render);
  render();
}
function initSuite() {
  const data = readData("suite-data");
  if (!data) return;
  SCALES = data.scales || {};
  const input = document.getElementById("f-suite"), more = document.getElementById("suite-more");
  // rows: [path index, key index, value, stderr, n]; keys: [suite, task, metric, unit, higher_is_better, method, estimate]
  const name = r => data.paths[r[0]][1];
  data.rows.sort((x, y) => (x[1] - y[1]) || compareValues(name(x), name(y)));
  let limit = 500;
  function render() {
    const q = input.value.trim().toLowerCase();
    const shown = data.rows.filter(r => !q || (name(r) + " " + data.keys[r[1]][1] + " " + data.keys[r[1]][2])
      .toLowerCase().includes(q));
    const tbody = document.querySelector("#suite-table tbody");
    tbody.replaceChildren();
    shown.slice(0, limit).forEach(r => {
      const p = data.paths[r[0]], [, task, metric, unit, hib, method, est] = data.keys[r[1]];
      const tr = document.createElement("tr");
      linkCell(tr, "../paths/" + p[0] + ".html", p[1]);
      cell(tr, p[2]); cell(tr, task); cell(tr, metric + (hib ? " ↑" : " ↓"));
      const q = r[2] === null ? ["—", null, ""] : parts(r[2], r[3], unit);
      cell(tr, (est ? "~" : "") + q[0] + (q[2] && r[2] !== null ? " " + q[2] : ""), "num" + (est ? " est" : ""));
      cell(tr, r[3] === null ? "—" : fmtErr(r[2], r[3], unit), "num");
      cell(tr, r[4] === null ? "—" : String(r[4]), "num"); cell(tr, unit); cell(tr, method, "muted");
      tbody.appendChild(tr);
    });
    document.getElementById("suite-count").textContent = shown.length + " rows" +
      (shown.length > limit ? " (first " + limit + " shown)" : "");
    more.style.display = shown.length > limit ? "" : "none";
  }
  input.addEventListener("input", () => { limit = 500; render(); });
  more.addEventListener("click", () => { limit += 1000; render(); });
  render();
}
document.addEventListener("DOMContentLoaded", () => { initOverview(); initCompare(); initSuite(); });
