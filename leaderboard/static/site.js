"use strict";
// Renders the overview table and the comparison view from JSON embedded in the page (works from file://).
function readData(id) {
  const el = document.getElementById(id);
  return el ? JSON.parse(el.textContent) : null;
}
function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  return Number(v.toPrecision(4)).toString();
}
function fmtErr(v) {
  return Math.abs(v) >= 1e5 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(1) : Number(v.toPrecision(2)).toString();
}
function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}
function initOverview() {
  const data = readData("site-data");
  const table = document.getElementById("overview");
  if (!data || !table) return;
  // only headline columns some path has a number for
  const heads = data.headlines.filter(h => data.paths.some(p => p[h.name] !== null && p[h.name] !== undefined));
  let rows = data.paths.slice();
  let sortKey = "path_name", sortDir = 1, limit = 500;
  const f = { hw: document.getElementById("f-hw"), base: document.getElementById("f-base"),
              tech: document.getElementById("f-tech"), text: document.getElementById("f-text") };
  const thead = table.querySelector("thead tr");
  const cols = [{ key: "path_name", label: "path" }, { key: "hardware_profile", label: "hardware" },
                { key: "base", label: "base" }].concat(heads.map(h => ({ key: h.name,
                label: h.label + (h.higher_is_better ? " ↑" : " ↓"), num: true })));
  cols.forEach(c => {
    const th = document.createElement("th");
    th.textContent = c.label;
    th.dataset.key = c.key;
    th.addEventListener("click", () => {
      sortDir = sortKey === c.key ? -sortDir : 1;
      sortKey = c.key;
      render();
    });
    thead.appendChild(th);
  });
  Object.values(f).forEach(el => el && el.addEventListener("input", render));
  const more = document.getElementById("more");
  if (more) more.addEventListener("click", () => { limit += 500; render(); });
  function keep(p) {
    if (f.hw.value && p.hardware_profile !== f.hw.value) return false;
    if (f.base.value && p.base !== f.base.value) return false;
    if (f.tech.value && !(p.techniques || []).includes(f.tech.value)) return false;
    if (f.text.value && !p.path_name.toLowerCase().includes(f.text.value.toLowerCase())) return false;
    return true;
  }
  function render() {
    const shown = rows.filter(keep).sort((a, b) => {
      const x = a[sortKey], y = b[sortKey];
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * sortDir;
    });
    thead.querySelectorAll("th").forEach(th => {
      th.className = th.dataset.key === sortKey ? (sortDir > 0 ? "sorted-asc" : "sorted-desc") : "";
    });
    const tbody = table.querySelector("tbody");
    tbody.replaceChildren();
    shown.slice(0, limit).forEach(p => {
      const tr = document.createElement("tr");
      const a = document.createElement("a");
      a.href = "paths/" + p.page + ".html";
      a.textContent = p.path_name;
      cell(tr, "").appendChild(a);
      cell(tr, p.hardware_profile);
      cell(tr, p.base);
      heads.forEach(h => {
        const v = p[h.name], se = p[h.name + "_stderr"];
        const td = cell(tr, (p[h.name + "_estimate"] ? "~" : "") + fmt(v) + (se !== null && se !== undefined ? " ± " + fmtErr(se) : ""),
                        "num" + (p[h.name + "_estimate"] ? " est" : ""));
        if (p[h.name + "_estimate"]) td.title = "estimated, not measured";
      });
      tbody.appendChild(tr);
    });
    document.getElementById("count").textContent = shown.length + " of " + rows.length + " paths";
    if (more) more.style.display = shown.length > limit ? "" : "none";
  }
  render();
}
function initCompare() {
  const data = readData("compare-data");
  if (!data) return;
  const a = document.getElementById("pick-a"), b = document.getElementById("pick-b");
  data.paths.forEach((p, i) => {
    [a, b].forEach(sel => { const o = document.createElement("option"); o.value = p.path_id;
      o.textContent = p.name + " [" + p.hardware_profile + "]"; sel.appendChild(o); });
  });
  const q = new URLSearchParams(location.search);
  if (q.get("a")) a.value = q.get("a");
  if (q.get("b")) b.value = q.get("b"); else if (data.paths.length > 1) b.selectedIndex = 1;
  function render() {
    const ma = data.metrics[a.value] || {}, mb = data.metrics[b.value] || {};
    const tbody = document.querySelector("#comparison tbody");
    tbody.replaceChildren();
    Object.keys(ma).filter(k => k in mb).sort().forEach(k => {
      const x = ma[k], y = mb[k], tr = document.createElement("tr");
      cell(tr, k);
      cell(tr, fmt(x[0]) + (x[1] !== null ? " ± " + fmt(x[1]) : ""), "num");
      cell(tr, fmt(y[0]) + (y[1] !== null ? " ± " + fmt(y[1]) : ""), "num");
      const d = y[0] - x[0];
      const good = x[2] ? d > 0 : d < 0;
      cell(tr, fmt(d), "num " + (d === 0 ? "" : good ? "better" : "worse"));
      tbody.appendChild(tr);
    });
  }
  a.addEventListener("change", render);
  b.addEventListener("change", render);
  render();
}
function initSuite() {
  const data = readData("suite-data");
  if (!data) return;
  const input = document.getElementById("f-suite"), more = document.getElementById("suite-more");
  let limit = 1000;
  function render() {
    const q = input.value.toLowerCase();
    // rows: [page, path, hardware, task, metric, value, stderr, n, unit, higher_is_better, method, estimate]
    const shown = data.rows.filter(r => !q || (r[1] + " " + r[3] + " " + r[4]).toLowerCase().includes(q));
    const tbody = document.querySelector("#suite-table tbody");
    tbody.replaceChildren();
    shown.slice(0, limit).forEach(r => {
      const tr = document.createElement("tr");
      const a = document.createElement("a");
      a.href = "../paths/" + r[0] + ".html";
      a.textContent = r[1];
      cell(tr, "").appendChild(a);
      cell(tr, r[2]); cell(tr, r[3]); cell(tr, r[4] + (r[9] ? " ↑" : " ↓"));
      cell(tr, (r[11] ? "~" : "") + fmt(r[5]), "num" + (r[11] ? " est" : ""));
      cell(tr, r[6] === null ? "—" : fmtErr(r[6]), "num");
      cell(tr, String(r[7]), "num"); cell(tr, r[8]); cell(tr, r[10], "muted");
      tbody.appendChild(tr);
    });
    document.getElementById("suite-count").textContent = shown.length + " rows";
    more.style.display = shown.length > limit ? "" : "none";
  }
  input.addEventListener("input", render);
  more.addEventListener("click", () => { limit += 1000; render(); });
  render();
}
document.addEventListener("DOMContentLoaded", () => { initOverview(); initCompare(); initSuite(); });
