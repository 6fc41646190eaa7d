// tollgate console: talks to the /v1 admin API with the token the operator pastes once
// (kept in sessionStorage). No build step, no third-party code.
"use strict";

const state = { page: "licenses" };

function token() { return sessionStorage.getItem("tollgate-token") || ""; }

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function show(id, text) {
  const node = document.getElementById(id);
  node.textContent = text;
  node.hidden = !text;
}

function clearBanners() { show("error", ""); show("notice", ""); }

// Calls the API; a problem+json answer becomes an Error whose message is the problem's detail.
async function api(method, path, body) {
  const headers = { "Authorization": "Bearer " + token() };
  const response = await fetch(path, { method, headers, body });
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { detail: text }; }
  if (!response.ok) {
    const detail = data && (data.detail || data.title) || response.statusText;
    const code = data && data.type ? data.type.replace("urn:tollgate:problem:", "") : String(response.status);
    throw new Error(`${code}: ${detail}`);
  }
  return data;
}

function fmtTime(text) { return text ? text.replace("T", " ").replace(/(:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$/, "$1 UTC") : "-"; }

function daysLeft(expire) {
  const days = Math.floor((new Date(expire) - new Date()) / 86400000);
  return days < 0 ? `expired ${-days} d ago` : `${days} d`;
}

function covers(license) {
  if (license.kind === "pair") return `${license.system_a} ↔ ${license.system_b}`;
  const env = (e) => e ? `flows ${e.flows}, endpoint apps ${e.endpoint_apps}, trading partners ${e.trading_partners}, agents ${e.agents}` : "-";
  const free = license.unlimited_until ? `; unlimited until ${fmtTime(license.unlimited_until)}` : "";
  return `${license.pricing} pricing${free}; production: ${env(license.production)}; sandbox: ${env(license.sandbox)}`;
}

async function renderLicenses() {
  const licenses = await api("GET", "/v1/licenses");
  const body = document.querySelector("#licenses tbody");
  body.replaceChildren(...licenses.map((license) => {
    const records = license.records
      ? `${license.records.used} / ${license.records.limit ?? "∞"}` + (license.records.warning ? " ⚠" : "")
      : "-";
    const points = license.points ? `${license.points.used}/${license.points.total}` : "-";
    const stateClass = license.state === "valid" ? "state-valid" : "state-bad";
    const remove = el("button", { class: "danger remove", "data-id": license.id, onclick: () => removeLicense(license.id) }, "Remove");
    return el("tr", { "data-id": license.id },
      el("td", {}, license.id), el("td", {}, license.kind), el("td", {}, license.company),
      el("td", {}, license.registered_to), el("td", {}, license.email),
      el("td", {}, license.bound_to || el("span", { class: "muted" }, "unbound")),
      el("td", {}, fmtTime(license.start)), el("td", {}, fmtTime(license.expire)), el("td", {}, daysLeft(license.expire)),
      el("td", {}, covers(license)), el("td", { class: "points" }, points), el("td", {}, records),
      el("td", { class: stateClass }, license.state + (license.reason ? ` (${license.reason})` : "")),
      el("td", {}, remove));
  }));
}

async function renderFlows() {
  const flows = await api("GET", "/v1/flows");
  const body = document.querySelector("#flows tbody");
  body.replaceChildren(...flows.map((flow) => {
    const stateText = flow.enabled ? (flow.reason ? `enabled, ${flow.reason}` : "enabled") : `disabled (${flow.reason})`;
    const action = flow.enabled
      ? el("button", { class: "disable", "data-id": flow.id, onclick: () => toggleFlow(flow.id, "disable") }, "Disable")
      : el("button", { class: "enable primary", "data-id": flow.id, onclick: () => toggleFlow(flow.id, "enable") }, "Enable");
    return el("tr", { "data-id": flow.id },
      el("td", {}, flow.id), el("td", {}, flow.kind), el("td", {}, flow.environment),
      el("td", {}, flow.systems.join(" ↔ ")), el("td", {}, flow.pair_key || "-"), el("td", {}, flow.license || "-"),
      el("td", { class: "state " + (flow.enabled && !flow.reason ? "state-enabled" : "state-bad") }, stateText),
      el("td", {}, action));
  }));
}

function meter(label, used, limit, hard, unit = "records") {
  const scale = Math.max(hard || limit || used, used, 1);
  const pct = (n) => `${Math.min(100, (n / scale) * 100)}%`;
  const cls = unit === "points" ? "used" : hard && used >= hard ? "used limit" : limit && used >= limit ? "used warning" : "used";
  const bar = el("div", { class: "bar" });
  if (limit && hard) bar.append(el("div", { class: "buffer", style: `left:${pct(limit)};width:${pct(hard - limit)}` }));
  bar.append(el("div", { class: cls, style: `width:${pct(used)}` }));
  if (limit) bar.append(el("div", { class: "mark", style: `left:${pct(limit)}` }));
  const right = unit === "points" ? `${used} / ${limit} points used`
    : limit ? `${used} / ${limit} (hard limit ${hard})` : `${used} (no limit)`;
  return el("div", { class: "meter" }, el("div", { class: "label" }, el("span", {}, label), el("span", {}, right)), bar);
}

function chart(days) {
  const entries = Object.entries(days);
  const width = 720, height = 140, pad = 18;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  const max = Math.max(1, ...entries.map(([, n]) => n));
  const step = (width - 2 * pad) / 31;
  for (const [day, n] of entries) {
    const index = Number(day.slice(8, 10)) - 1;
    const h = ((height - 2 * pad) * n) / max;
    const rect = document.createElementNS(svg.namespaceURI, "rect");
    rect.setAttribute("x", pad + index * step + 1);
    rect.setAttribute("y", height - pad - h);
    rect.setAttribute("width", step - 2);
    rect.setAttribute("height", h);
    const title = document.createElementNS(svg.namespaceURI, "title");
    title.textContent = `${day}: ${n}`;
    rect.append(title);
    svg.append(rect);
  }
  for (const day of [1, 8, 15, 22, 29]) {
    const text = document.createElementNS(svg.namespaceURI, "text");
    text.setAttribute("x", pad + (day - 1) * step);
    text.setAttribute("y", height - 4);
    text.textContent = String(day);
    svg.append(text);
  }
  return svg;
}

async function renderUsage() {
  const [usage, licenses, entitlements] = await Promise.all([
    api("GET", "/v1/usage"), api("GET", "/v1/licenses"), api("GET", "/v1/entitlements"),
  ]);
  document.getElementById("usage-month").textContent = `(${usage.month}, ${usage.timezone})`;
  document.getElementById("records").replaceChildren(...usage.licenses.map((l) => meter(l.id, l.used, l.limit, l.hard_limit)));
  document.getElementById("points").replaceChildren(...licenses.filter((l) => l.points)
    .map((l) => meter(l.id, l.points.used, l.points.total, l.points.total, "points")));
  const body = document.querySelector("#entitlements tbody");
  body.replaceChildren(...["production", "sandbox"].map((env) => {
    const cell = (name) => {
      const e = entitlements[env][name];
      return el("td", { title: e.keys.join("\n") }, `${e.used} / ${e.limit ?? "no limit"}`);
    };
    return el("tr", {}, el("td", {}, env), cell("flows"), cell("endpoint_apps"), cell("trading_partners"), cell("agents"));
  }));
  // Fleet mode: every sidecar's lease of each license (the totals above are the fleet's).
  const leased = licenses.filter((l) => l.fleet);
  document.getElementById("fleet").hidden = leased.length === 0;
  if (leased.length) {
    document.getElementById("fleet-node").textContent = `(this sidecar: ${leased[0].fleet.node})`;
    document.querySelector("#leases tbody").replaceChildren(...leased.flatMap((l) => l.fleet.nodes.map((n) =>
      el("tr", {}, el("td", {}, l.id), el("td", {}, n.node), el("td", {}, String(n.held)),
        el("td", {}, String(n.committed)), el("td", { class: n.live ? "state-valid" : "state-bad" }, n.live ? "yes" : "no")))));
  }
  document.getElementById("daily").replaceChildren(...Object.entries(usage.daily || {})
    .map(([id, days]) => el("div", {}, el("div", { class: "muted" }, id), chart(days))));
}

const renderers = { licenses: renderLicenses, flows: renderFlows, usage: renderUsage };

async function render() {
  if (!token()) { show("error", "Paste the admin token (admin.token_file) above to see this sidecar."); return; }
  try {
    const [status] = await Promise.all([api("GET", "/v1/status"), renderers[state.page]()]);
    document.getElementById("shadow").hidden = status.enforcement !== "shadow";
  } catch (err) { show("error", err.message); }
}

// Runs a change; `work` resolves to the message shown when it succeeds.
async function act(work) {
  clearBanners();
  let message = "";
  try { message = await work(); } catch (err) { show("error", err.message); }
  await render().catch(() => {});
  if (message) show("notice", message);
}

async function removeLicense(id) {
  if (!confirm(`Remove license ${id}? Flows holding its points are disabled.`)) return;
  await act(async () => { await api("DELETE", `/v1/licenses/${encodeURIComponent(id)}`); return `License ${id} removed.`; });
}

async function toggleFlow(id, action) {
  await act(async () => { await api("POST", `/v1/flows/${encodeURIComponent(id)}/${action}`); return `Flow ${id} ${action}d.`; });
}

async function upload() {
  const file = document.getElementById("license-file").files[0];
  if (!file) { show("error", "Choose a .lic file first."); return; }
  const text = await file.text();
  await act(async () => {
    const license = await api("POST", "/v1/licenses", text);
    const disabled = license.disabled_flows && license.disabled_flows.length ? ` Disabled: ${license.disabled_flows.join(", ")}.` : "";
    return `License ${license.id} installed from ${file.name}.${disabled}`;
  });
  document.getElementById("license-file").value = "";
}

function go(page) {
  state.page = page;
  for (const button of document.querySelectorAll("nav button")) button.classList.toggle("active", button.dataset.page === page);
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== `page-${page}`;
  clearBanners();
  render();
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("tollgate-token", document.getElementById("token").value.trim());
  document.getElementById("token").value = "";
  clearBanners();
  render();
});
document.getElementById("upload").addEventListener("click", upload);
for (const button of document.querySelectorAll("nav button")) button.addEventListener("click", () => go(button.dataset.page));
render();
