// Keel web UI: a dependency-free single page over the REST API.
// Every value from the API is inserted as text (never as HTML): trace content is untrusted.
"use strict";

const state = { key: localStorage.getItem("keel.key") || "" };

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") el.addEventListener("click", v);
    else if (k === "class") el.className = v;
    else if (k === "style") Object.assign(el.style, v); // CSSOM: allowed under the strict CSP
    else if (v !== null && v !== undefined) el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(path, params) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) if (v !== "" && v !== null && v !== undefined) url.searchParams.set(k, v);
  const headers = state.key ? { Authorization: "Bearer " + state.key } : {};
  const r = await fetch(url, { headers });
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  if (!r.ok) {
    const e = (body && body.error) || {};
    const err = new Error(e.message || ("HTTP " + r.status));
    err.hint = e.hint; err.status = r.status;
    throw err;
  }
  return body;
}

const fmt = {
  ms: (v) => (v === null || v === undefined ? "" : v < 1000 ? v.toFixed(1) + " ms" : (v / 1000).toFixed(2) + " s"),
  usd: (v) => (v === null || v === undefined ? "–" : "$" + (v < 0.01 ? v.toFixed(6) : v.toFixed(4))),
  time: (v) => (v ? new Date(v).toLocaleString() : ""),
  int: (v) => (v === null || v === undefined ? "" : Number(v).toLocaleString()),
};

function showError(view, e) {
  view.replaceChildren(h("div", { class: "error" },
    h("strong", {}, e.message), e.hint ? h("div", {}, "→ " + e.hint) : null,
    e.status === 401 ? h("div", {}, "Paste an API key above (create one with `keel keys create`).") : null));
}

function table(columns, rows, onRow) {
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : "" }, c.title)))),
    h("tbody", {}, rows.length === 0
      ? h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, "Nothing here yet."))
      : rows.map((r) => h("tr", { class: onRow ? "click" : "", onclick: onRow ? () => onRow(r) : null },
          columns.map((c) => h("td", { class: c.num ? "num" : "" }, c.render ? c.render(r) : r[c.key]))))));
}

function barChart(values, label) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 600 140");
  svg.setAttribute("preserveAspectRatio", "none");
  const max = Math.max(1e-9, ...values.map((v) => v.value));
  const w = 600 / Math.max(values.length, 1);
  values.forEach((v, i) => {
    const bh = (v.value / max) * 118;
    const r = document.createElementNS(ns, "rect");
    r.setAttribute("x", i * w + 1); r.setAttribute("width", Math.max(1, w - 2));
    r.setAttribute("y", 128 - bh); r.setAttribute("height", bh);
    r.setAttribute("fill", v.bad ? "#dc2626" : "#2563eb");
    const t = document.createElementNS(ns, "title"); t.textContent = v.title; r.appendChild(t);
    svg.appendChild(r);
  });
  const cap = document.createElementNS(ns, "text");
  cap.setAttribute("x", 6); cap.setAttribute("y", 12); cap.setAttribute("font-size", "10"); cap.setAttribute("fill", "#6b7280");
  cap.textContent = label + " (max " + max.toFixed(1) + ")";
  svg.appendChild(cap);
  return svg;
}

// ---------------------------------------------------------------- views

async function viewOverview(view) {
  const traces = await api("/api/traces", { limit: 200 });
  const items = traces.data;
  const errors = items.filter((t) => t.status === "error").length;
  const cost = items.reduce((a, t) => a + (t.cost_usd || 0), 0);
  const tokens = items.reduce((a, t) => a + t.input_tokens + t.output_tokens, 0);
  const durations = items.map((t) => t.duration_ms).sort((a, b) => a - b);
  const p99 = durations.length ? durations[Math.min(durations.length - 1, Math.floor(durations.length * 0.99))] : 0;
  const card = (title, value) => h("div", { class: "card" }, h("div", { class: "muted" }, title), h("div", { class: "stat" }, value));
  view.replaceChildren(
    h("h1", {}, "Overview (last " + items.length + " traces)"),
    h("div", { class: "cards" },
      card("Traces", fmt.int(items.length)),
      card("Error rate", items.length ? ((100 * errors) / items.length).toFixed(1) + " %" : "–"),
      card("p99 latency", fmt.ms(p99)),
      card("Tokens", fmt.int(tokens)),
      card("Cost", fmt.usd(cost))),
    barChart(items.slice().reverse().map((t) => ({ value: t.duration_ms, bad: t.status === "error", title: t.root_name + " · " + fmt.ms(t.duration_ms) })), "latency per trace, ms"),
    h("h2", {}, "Latest traces"),
    traceTable(items.slice(0, 15)));
}

function traceTable(items) {
  return table([
    { title: "Started", render: (t) => fmt.time(t.start_time) },
    { title: "Root", render: (t) => h("span", {}, t.root_name, " ", t.routes.map((r) => h("span", { class: "pill" }, "route " + r))) },
    { title: "Service", key: "service" },
    { title: "Models", render: (t) => t.models.join(", ") },
    { title: "Spans", key: "span_count", num: true },
    { title: "Duration", render: (t) => fmt.ms(t.duration_ms), num: true },
    { title: "Tokens in/out", render: (t) => fmt.int(t.input_tokens) + " / " + fmt.int(t.output_tokens), num: true },
    { title: "Cost", render: (t) => fmt.usd(t.cost_usd), num: true },
    { title: "Status", render: (t) => h("span", { class: t.status === "error" ? "bad" : t.status === "ok" ? "good" : "muted" }, t.status) },
  ], items, (t) => (location.hash = "#/traces/" + t.trace_id));
}

async function viewTraces(view, params) {
  const form = h("form", { class: "filters" },
    h("input", { name: "q", placeholder: "span name contains", value: params.get("q") || "" }),
    h("input", { name: "model", placeholder: "model", value: params.get("model") || "" }),
    h("input", { name: "route", placeholder: "route", value: params.get("route") || "" }),
    h("input", { name: "prompt_name", placeholder: "prompt", value: params.get("prompt_name") || "" }),
    h("select", { name: "status" }, ["", "ok", "error", "unset"].map((s) => {
      const o = h("option", { value: s }, s || "any status"); if (params.get("status") === s) o.selected = true; return o; })),
    h("select", { name: "sort" }, ["start_time", "duration", "cost", "tokens"].map((s) => {
      const o = h("option", { value: s }, "sort: " + s); if (params.get("sort") === s) o.selected = true; return o; })),
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams(new FormData(form));
    for (const [k, v] of [...q.entries()]) if (!v) q.delete(k);
    location.hash = "#/traces?" + q.toString();
  });
  const query = Object.fromEntries(params.entries());
  const page = await api("/api/traces", { limit: 50, ...query });
  const pager = h("div", { class: "pager" },
    page.next_cursor ? h("button", { class: "link", onclick: () => {
      const q = new URLSearchParams(params); q.set("cursor", page.next_cursor); location.hash = "#/traces?" + q.toString();
    } }, "Next page →") : null);
  view.replaceChildren(h("h1", {}, "Traces"), form, traceTable(page.data), pager);
}

function flatten(nodes, depth, out) {
  for (const n of nodes) { out.push([n, depth]); flatten(n.children || [], depth + 1, out); }
  return out;
}

function spanKind(n) {
  const a = n.attributes || {};
  const k = (a["openinference.span.kind"] || a["keel.span.kind"] || (n.llm && n.llm.operation) || n.kind || "").toString().toLowerCase();
  return { chat: "llm", text_completion: "llm", generate_content: "llm", invoke_agent: "agent", execute_tool: "tool", retrieval: "retriever" }[k] || k;
}

function spanDetail(n) {
  const parts = [h("h2", {}, n.name), h("div", { class: "muted" }, n.span_id + " · " + fmt.ms(n.duration_ms) + " · " + n.status + (n.status_message ? " · " + n.status_message : ""))];
  const l = n.llm;
  if (l) {
    const rows = [["provider", l.provider], ["request model", l.request_model], ["response model", l.response_model],
      ["tokens in / out / cached", [l.input_tokens, l.output_tokens, l.cached_tokens].map((x) => (x === null || x === undefined ? "–" : x)).join(" / ")],
      ["cost", fmt.usd(l.cost_usd) + (l.cost_source ? " (" + l.cost_source + ")" : "")], ["time to first token", fmt.ms(l.ttft_ms)],
      ["prompt", l.prompt_name ? l.prompt_name + " v" + (l.prompt_version ?? "?") + (l.prompt_label ? " @" + l.prompt_label : "") : ""],
      ["route", l.route], ["error", l.error_type]].filter((r) => r[1]);
    parts.push(table([{ title: "field", key: 0 }, { title: "value", key: 1 }], rows));
    const msgs = (title, list) => list && list.length ? [h("h2", {}, title), ...list.map((m) => h("div", { class: "msg" }, h("b", {}, m.role), " ", m.content || "",
      (m.tool_calls || []).map((t) => h("div", {}, "→ tool " + t.name + "(" + JSON.stringify(t.arguments) + ")"))))] : [];
    parts.push(...msgs("Input messages", l.input_messages), ...msgs("Output messages", l.output_messages));
    if (l.tool_calls && l.tool_calls.length) parts.push(h("h2", {}, "Tool calls"), h("pre", {}, JSON.stringify(l.tool_calls, null, 2)));
    if (l.documents && l.documents.length) parts.push(h("h2", {}, "Retrieved documents"), ...l.documents.map((d) => h("div", { class: "msg" }, h("b", {}, d.id || "doc"), " ", d.content)));
  }
  parts.push(h("h2", {}, "Attributes"), h("pre", {}, JSON.stringify(n.attributes, null, 2)));
  if (n.events && n.events.length) parts.push(h("h2", {}, "Events"), h("pre", {}, JSON.stringify(n.events, null, 2)));
  return parts;
}

async function viewTrace(view, id) {
  const t = await api("/api/traces/" + encodeURIComponent(id));
  const rows = flatten(t.spans, 0, []);
  const t0 = Math.min(...rows.map(([n]) => n.start_time_ns));
  const total = Math.max(1, Math.max(...rows.map(([n]) => n.end_time_ns)) - t0);
  const detail = h("div", { class: "card" }, h("span", { class: "muted" }, "Click a span to see its details."));
  const tree = h("div", { class: "tree card" }, rows.map(([n, depth]) => {
    const left = ((n.start_time_ns - t0) / total) * 100;
    const width = Math.max(0.3, ((n.end_time_ns - n.start_time_ns) / total) * 100);
    const kind = spanKind(n);
    return h("div", { class: "span", onclick: () => detail.replaceChildren(...spanDetail(n)) },
      h("div", { style: { paddingLeft: depth * 16 + "px" } }, kind ? h("span", { class: "kind " + kind }, kind) : null, n.name),
      h("div", {}, h("div", { class: "bar" + (n.status === "error" ? " err" : ""), style: { marginLeft: left + "%", width: width + "%" } })),
      h("div", { class: "num muted" }, fmt.ms(n.duration_ms)));
  }));
  const firstLlm = rows.find(([n]) => n.llm && (n.llm.input_messages || []).length);
  if (firstLlm) detail.replaceChildren(...spanDetail(firstLlm[0]));
  const s = t.summary;
  view.replaceChildren(h("h1", {}, "Trace " + s.root_name),
    h("div", { class: "muted" }, t.trace_id + " · " + fmt.time(s.start_time) + " · " + s.span_count + " spans · " + fmt.ms(s.duration_ms) + " · " + fmt.usd(s.cost_usd)),
    h("h2", {}, "Waterfall"), tree, detail);
}

async function viewPrompts(view) {
  const items = await api("/api/prompts");
  const list = Array.isArray(items) ? items : items.data || [];
  view.replaceChildren(h("h1", {}, "Prompts"), table([
    { title: "Name", key: "name" }, { title: "Latest version", key: "version", num: true },
    { title: "Labels", render: (p) => (p.labels || []).map((l) => h("span", { class: "pill" }, typeof l === "string" ? l : l.label)) },
    { title: "Hash", render: (p) => (p.content_hash || "").slice(0, 19) },
    { title: "Created", render: (p) => fmt.time(p.created_at) },
  ], list, (p) => (location.hash = "#/prompts/" + encodeURIComponent(p.name))));
}

async function viewPrompt(view, name) {
  const [versions, labels] = await Promise.all([api("/api/prompts/" + encodeURIComponent(name) + "/versions"), api("/api/prompts/" + encodeURIComponent(name) + "/labels")]);
  const vs = Array.isArray(versions) ? versions : versions.data || [];
  const ls = Array.isArray(labels) ? labels : labels.data || [];
  view.replaceChildren(h("h1", {}, "Prompt " + name),
    h("h2", {}, "Labels"), table([{ title: "Label", key: "label" }, { title: "Version", key: "version", num: true }, { title: "Protected", render: (l) => (l.protected ? "yes" : "") }], ls),
    h("h2", {}, "Versions"), table([
      { title: "Version", key: "version", num: true }, { title: "Message", key: "message" }, { title: "Author", key: "author" },
      { title: "Hash", render: (v) => (v.content_hash || "").slice(0, 19) }, { title: "Created", render: (v) => fmt.time(v.created_at) },
    ], vs.slice().reverse()),
    vs.length ? h("h2", {}, "Latest content") : null,
    vs.length ? h("pre", {}, JSON.stringify(vs[vs.length - 1].content || vs[vs.length - 1], null, 2)) : null);
}

async function viewDatasets(view) {
  const items = await api("/api/datasets");
  const list = Array.isArray(items) ? items : items.data || [];
  view.replaceChildren(h("h1", {}, "Datasets"), table([
    { title: "Name", key: "name" }, { title: "Latest version", key: "latest_version", num: true },
    { title: "Rows", render: (d) => fmt.int(d.row_count ?? d.rows), num: true },
    { title: "Description", key: "description" }, { title: "Created", render: (d) => fmt.time(d.created_at) },
  ], list));
}

async function viewEvals(view) {
  const items = await api("/api/evals/runs");
  const list = Array.isArray(items) ? items : items.data || [];
  view.replaceChildren(h("h1", {}, "Eval runs"), table([
    { title: "Run", key: "id" }, { title: "Suite", key: "suite" }, { title: "Target", key: "target" },
    { title: "Dataset", render: (r) => (r.dataset_name ? r.dataset_name + "@" + r.dataset_version : "") },
    { title: "Status", key: "status" },
    { title: "Gate", render: (r) => (r.verdict ? h("span", { class: r.verdict.passed ? "good" : "bad" }, r.verdict.passed ? "passed" : "failed") : "") },
    { title: "Created", render: (r) => fmt.time(r.created_at) },
  ], list));
}

async function viewKeys(view) {
  const keys = await api("/api/keys");
  view.replaceChildren(h("h1", {}, "API keys"), table([
    { title: "Id", key: "id" }, { title: "Name", key: "name" }, { title: "Prefix", render: (k) => k.prefix + "…" },
    { title: "Scopes", render: (k) => k.scopes.join(" ") }, { title: "Created", render: (k) => fmt.time(k.created_at) },
    { title: "Revoked", render: (k) => fmt.time(k.revoked_at) },
  ], keys));
}

// ---------------------------------------------------------------- router

async function route() {
  const view = document.getElementById("view");
  const [path, qs] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(qs || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.getAttribute("href") === "#/" + (parts[0] || "")));
  view.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  try {
    if (parts.length === 0) await viewOverview(view);
    else if (parts[0] === "traces" && parts[1]) await viewTrace(view, parts[1]);
    else if (parts[0] === "traces") await viewTraces(view, params);
    else if (parts[0] === "prompts" && parts[1]) await viewPrompt(view, parts[1]);
    else if (parts[0] === "prompts") await viewPrompts(view);
    else if (parts[0] === "datasets") await viewDatasets(view);
    else if (parts[0] === "evals") await viewEvals(view);
    else if (parts[0] === "keys") await viewKeys(view);
    else view.replaceChildren(h("p", {}, "Unknown page."));
  } catch (e) { showError(view, e); }
}

async function showProject() {
  try {
    const p = await api("/api/projects");
    document.getElementById("project").textContent = "project: " + p.data.map((x) => x.name).join(", ");
  } catch (_) { document.getElementById("project").textContent = "not signed in"; }
}

document.getElementById("apikey").value = state.key;
document.getElementById("keyform").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.key = document.getElementById("apikey").value.trim();
  localStorage.setItem("keel.key", state.key);
  showProject(); route();
});
window.addEventListener("hashchange", route);
showProject();
route();
