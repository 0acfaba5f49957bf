// chroma-syncd dashboard: vanilla JavaScript, no build step, no third-party
// code. Everything it shows or does goes through the public API with the
// token the user typed, so it can do nothing that token cannot.
"use strict";

const TOKEN_KEY = "chroma-syncd-token";
const STATUSES = ["pending", "processing", "complete", "failed", "cancelled"];
const TYPES = ["s3", "github", "web_scrape", "filesystem"];

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  signedIn: false,
  sources: [],
  jobs: new Map(), // id -> Job JSON, merged from lists and the event stream
  lastBySource: new Map(), // source id -> newest Job
  sourceFilter: { database: "", type: "" },
  jobFilter: { status: "", source: "" },
  events: null, // AbortController of the event stream
  metrics: null, // last /metrics reading, for the recent error rate
};

// ---------------------------------------------------------------- helpers

/** An element: h("td", {class: "x"}, "text", child, …). */
function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "value") node.value = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const $ = (id) => document.getElementById(id);

function notice(text, bad) {
  const box = $("notice");
  box.textContent = text || "";
  box.classList.toggle("bad", !!bad);
}

function statusWord(job) {
  return typeof job.status === "string" ? job.status : Object.keys(job.status)[0];
}

function jobError(job) {
  if (job.status && job.status.failed) return job.status.failed.error;
  return job.last_error || "";
}

function jobKind(job) {
  const m = job.metadata || {};
  for (const kind of ["s3", "github", "web_scrape", "filesystem", "file"]) {
    if (kind in m) return kind;
  }
  return "unknown";
}

function sourceType(source) {
  return TYPES.find((t) => source[t]) || "unknown";
}

function sourceCollection(source) {
  const t = sourceType(source);
  const settings = source[t] || {};
  return settings.collection_name || (source.schedule && source.schedule.target_collection_name) || "";
}

function sourceWhat(source) {
  const s = source[sourceType(source)] || {};
  return s.bucket_name ? `${s.bucket_name}${s.path_prefix ? "/" + s.path_prefix : ""}`
    : s.repository || s.starting_url || s.root || "";
}

function when(text) {
  if (!text) return "";
  const date = new Date(text);
  return isNaN(date) ? text : date.toLocaleString();
}

function duration(job) {
  if (job.status && job.status.complete) return seconds(job.status.complete.duration_ms);
  if (statusWord(job) === "processing" && job.started_at) {
    return seconds(Date.now() - new Date(job.started_at).getTime()) + " so far";
  }
  return "";
}

function seconds(ms) {
  if (ms === undefined || ms === null) return "";
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function short(id) {
  return id ? String(id).slice(0, 8) : "";
}

// ---------------------------------------------------------------- the API

/** Calls the API with the token; {status, body}. 401 shows the sign-in. */
async function api(method, path, body) {
  const headers = {};
  if (state.token) headers["x-chroma-token"] = state.token;
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    return { status: 0, body: { error: "network", message: `the daemon did not answer (${error.message})` } };
  }
  const text = await response.text();
  let parsed = text;
  try { parsed = text ? JSON.parse(text) : null; } catch (_) { /* text, e.g. /metrics */ }
  if (response.status === 401 && path.startsWith("/api/")) {
    showSignIn(refusal(401, parsed));
  }
  return { status: response.status, body: parsed };
}

function refusal(status, body) {
  const message = body && body.message ? body.message : "";
  return status === 401
    ? `The token was refused (401 Unauthorized)${message ? ": " + message : ""}.`
    : `Not allowed (403 Forbidden)${message ? ": " + message : ""}.`;
}

/** The API's {error, message} as one line. */
function explain(result) {
  const b = result.body;
  if (result.status === 403) return refusal(403, b);
  if (b && typeof b === "object" && b.message) return `${b.error || "error"} (${result.status}): ${b.message}`;
  return `HTTP ${result.status}`;
}

// ---------------------------------------------------------------- sign-in

function showSignIn(message) {
  stopEvents();
  state.signedIn = false;
  $("signin").hidden = false;
  $("content").replaceChildren();
  $("nav").hidden = true;
  $("signout").hidden = true;
  $("live").textContent = "";
  $("live").className = "live";
  $("signin-error").textContent = message || "";
  $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  await start();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.jobs.clear();
  showSignIn("Signed out.");
}

/** Loads the sources; on success the views and the event stream start. */
async function start() {
  const result = await api("GET", "/api/v1/sources?limit=1000");
  if (result.status === 401) {
    if (state.token) {
      sessionStorage.removeItem(TOKEN_KEY);
      state.token = null;
    }
    return; // api() showed the sign-in with the reason
  }
  if (result.status !== 200) {
    notice(`Could not load the sources: ${explain(result)}`, true);
    if (result.status === 403) showSignIn(refusal(403, result.body));
    return;
  }
  state.signedIn = true;
  state.sources = result.body;
  $("signin").hidden = true;
  $("signin-error").textContent = "";
  $("nav").hidden = false;
  $("signout").hidden = !state.token;
  await loadJobs();
  followEvents();
  route();
}

// ---------------------------------------------------------------- data

async function loadSources() {
  const result = await api("GET", "/api/v1/sources?limit=1000");
  if (result.status === 200) state.sources = result.body;
  else if (result.status !== 401) notice(`Could not load the sources: ${explain(result)}`, true);
}

async function loadJobs() {
  const params = new URLSearchParams({ limit: "200" });
  if (state.jobFilter.status) params.set("status", state.jobFilter.status);
  if (state.jobFilter.source) params.set("source_id", state.jobFilter.source);
  const result = await api("GET", `/api/v1/invocations?${params}`);
  if (result.status === 200) {
    for (const job of result.body) remember(job);
  } else if (result.status !== 401) {
    notice(`Could not load the invocations: ${explain(result)}`, true);
  }
}

function remember(job) {
  state.jobs.set(job.id, job);
  if (job.source_id) {
    const last = state.lastBySource.get(job.source_id);
    if (!last || last.created_at <= job.created_at) state.lastBySource.set(job.source_id, job);
  }
}

/** Reads `GET /api/v1/events` with fetch (EventSource cannot send a
 *  header), merging every `invocation` event; reconnects when it ends. */
function followEvents() {
  stopEvents();
  const controller = new AbortController();
  state.events = controller;
  let delay = 500;
  const live = $("live");
  const run = async () => {
    while (!controller.signal.aborted) {
      try {
        const headers = state.token ? { "x-chroma-token": state.token } : {};
        const response = await fetch("/api/v1/events", { headers, signal: controller.signal });
        if (response.status === 401) {
          showSignIn(refusal(401, await response.json().catch(() => null)));
          return;
        }
        if (response.status !== 200) throw new Error(`HTTP ${response.status}`);
        await readEvents(response.body, (name, data) => {
          if (name === "ready") {
            live.textContent = "Live";
            live.className = "live on";
            delay = 500;
          } else if (name === "invocation") {
            remember(JSON.parse(data));
            scheduleRender();
          }
        });
      } catch (error) {
        if (controller.signal.aborted) return;
      }
      if (controller.signal.aborted) return;
      live.textContent = "Reconnecting…";
      live.className = "live off";
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  };
  run();
}

function stopEvents() {
  if (state.events) state.events.abort();
  state.events = null;
}

/** Parses a text/event-stream body, calling `handle(event, data)`. */
async function readEvents(body, handle) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let name = "message";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, "");
      buffer = buffer.slice(end + 1);
      if (line === "") {
        if (data.length) handle(name, data.join("\n"));
        name = "message";
        data = [];
      } else if (line.startsWith(":")) {
        // keep-alive comment
      } else {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") name = text;
        else if (field === "data") data.push(text);
      }
    }
  }
}

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    refreshLive();
  });
}

// ---------------------------------------------------------------- routing

function route() {
  if (!state.signedIn) return;
  const hash = location.hash || "#/sources";
  const [, view, id] = hash.split("/");
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.view === (view || "sources")) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const content = $("content");
  if (view === "invocations" && id) content.replaceChildren(detailView(id));
  else if (view === "invocations") content.replaceChildren(invocationsView());
  else if (view === "health") content.replaceChildren(healthView());
  else content.replaceChildren(sourcesView());
  const heading = content.querySelector("h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus();
  }
}

/** Re-renders the live parts of the current view, keeping focus. */
function refreshLive() {
  const focused = document.activeElement && document.activeElement.id;
  // What the user typed in a re-rendered row survives the re-render.
  const typed = new Map();
  for (const input of document.querySelectorAll("[data-live] input")) {
    if (input.id) typed.set(input.id, input.value);
  }
  for (const body of document.querySelectorAll("[data-live]")) {
    const kind = body.dataset.live;
    if (kind === "jobs") body.replaceChildren(...jobRows());
    else if (kind === "sources") body.replaceChildren(...sourceRows());
    else if (kind === "detail") body.replaceChildren(detailBody(body.dataset.id));
  }
  for (const [id, value] of typed) {
    const input = $(id);
    if (input) input.value = value;
  }
  if (focused && document.activeElement && document.activeElement.id !== focused) {
    const again = $(focused);
    if (again) again.focus();
  }
}

// ---------------------------------------------------------------- sources

function sourcesView() {
  const databases = [...new Set(state.sources.map((s) => s.database_name))].sort();
  const filters = h("form", { class: "filters", "aria-label": "Filter sources", onsubmit: (e) => e.preventDefault() },
    h("div", {},
      h("label", { for: "filter-database" }, "Filter by database"),
      h("select", { id: "filter-database", onchange: (e) => { state.sourceFilter.database = e.target.value; refreshLive(); } },
        h("option", { value: "" }, "All databases"),
        databases.map((d) => h("option", { value: d, selected: state.sourceFilter.database === d }, d)))),
    h("div", {},
      h("label", { for: "filter-type" }, "Filter by type"),
      h("select", { id: "filter-type", onchange: (e) => { state.sourceFilter.type = e.target.value; refreshLive(); } },
        h("option", { value: "" }, "All types"),
        TYPES.map((t) => h("option", { value: t, selected: state.sourceFilter.type === t }, t)))),
    h("div", {}, h("button", { type: "button", id: "reload-sources", onclick: async () => { await loadSources(); await loadJobs(); route(); } }, "Reload")));
  return h("section", { "aria-labelledby": "sources-title" },
    h("h1", { id: "sources-title" }, "Sources"),
    filters,
    h("div", { class: "table-wrap" },
      h("table", { id: "sources-table" },
        h("caption", {}, "Every source this token may see, newest first"),
        h("thead", {}, h("tr", {},
          ["Source", "Type", "Database", "Collection", "Schedule", "Auto-sync", "Last invocation", "Actions"]
            .map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", { "data-live": "sources" }, sourceRows()))),
    createSourceForm());
}

function sourceRows() {
  const f = state.sourceFilter;
  const shown = state.sources.filter((s) =>
    (!f.database || s.database_name === f.database) && (!f.type || sourceType(s) === f.type));
  if (!shown.length) {
    return [h("tr", {}, h("td", { colspan: 8 }, state.sources.length ? "No source matches the filters." : "No sources yet: create one below."))];
  }
  return shown.map(sourceRow);
}

function sourceRow(source) {
  const type = sourceType(source);
  const settings = source[type] || {};
  const last = state.lastBySource.get(source.id);
  const schedule = source.schedule
    ? [h("code", {}, source.schedule.cron), source.schedule.time_zone ? ` (${source.schedule.time_zone})` : "",
      h("br"), h("a", { href: `#/sources`, class: "small", "data-slots": source.id, onclick: (e) => { e.preventDefault(); showSlots(source, e.target); } }, "latest slots")]
    : "—";
  const field = { s3: ["Object key", true], filesystem: ["Path (optional)", false],
    github: ["Target collection", true], web_scrape: ["Target collection", true] }[type];
  const inputId = `sync-${source.id}`;
  const sync = h("form", { "aria-label": `Sync source ${short(source.id)}`, onsubmit: (e) => { e.preventDefault(); syncNow(source, $(inputId)); } },
    field ? [h("label", { for: inputId, class: "small" }, field[0]),
      h("input", { id: inputId, name: "target", required: field[1] || undefined, value: type === "github" || type === "web_scrape" ? sourceCollection(source) : undefined })] : null,
    h("button", { type: "submit", class: "primary" }, "Sync now"),
    h("button", { type: "button", class: "danger", onclick: () => deleteSource(source) }, "Delete"));
  return h("tr", { "data-source": source.id },
    h("td", {}, h("code", { title: source.id }, short(source.id)), h("br"), h("span", { class: "small" }, sourceWhat(source))),
    h("td", {}, type),
    h("td", {}, source.database_name),
    h("td", {}, sourceCollection(source) || "—"),
    h("td", {}, schedule),
    h("td", {}, settings.auto_sync || "none"),
    h("td", {}, last
      ? [h("a", { href: `#/invocations/${last.id}` }, h("span", { class: `status status-${statusWord(last)}` }, statusWord(last))),
        h("br"), h("span", { class: "small" }, when(last.created_at))]
      : "never"),
    h("td", { class: "actions" }, sync));
}

async function showSlots(source, link) {
  const result = await api("GET", `/api/v1/sources/${source.id}/schedule/slots?limit=5`);
  if (result.status !== 200) { notice(explain(result), true); return; }
  const slots = result.body.slots || [];
  link.replaceWith(h("span", { class: "small" },
    slots.length ? slots.map((s) => `${when(s.slot)}: ${typeof s.outcome === "string" ? s.outcome : JSON.stringify(s.outcome)}`).join("; ") : "no slot fired yet"));
}

function invocationBody(type, value) {
  value = (value || "").trim();
  if (type === "s3") return { object_key: value };
  if (type === "filesystem") return value ? { path: value } : {};
  return { target_collection_name: value };
}

async function syncNow(source, input) {
  const type = sourceType(source);
  const body = invocationBody(type, input ? input.value : "");
  const result = await api("POST", `/api/v1/sources/${source.id}/invocations`, body);
  if (result.status === 201) {
    notice(`Invocation ${short(result.body.invocation_id)} created for source ${short(source.id)}.`);
    remember({ id: result.body.invocation_id, status: "pending", source_id: source.id, created_at: new Date().toISOString(),
      metadata: { database_name: source.database_name, collection_name: "" }, attempt: 0, stats: {}, trigger: "manual" });
    refreshLive();
  } else if (result.status !== 401) {
    notice(`Sync refused: ${explain(result)}`, true);
  }
}

async function deleteSource(source) {
  if (!confirm(`Delete source ${short(source.id)} (${sourceType(source)}, database ${source.database_name})? Its pending invocations are cancelled.`)) return;
  const result = await api("DELETE", `/api/v1/sources/${source.id}`);
  if (result.status === 204) {
    notice(`Source ${short(source.id)} deleted.`);
    state.sources = state.sources.filter((s) => s.id !== source.id);
    refreshLive();
  } else if (result.status !== 401) {
    notice(`Delete refused: ${explain(result)}`, true);
  }
}

const TEMPLATES = {
  s3: { bucket_name: "", region: "us-east-1", collection_name: "", aws_credential_id: 0 },
  github: { repository: "owner/name" },
  web_scrape: { starting_url: "", max_depth: 3, page_limit: 500 },
  filesystem: { root: "", collection_name: "" },
};

function createSourceForm() {
  const type = h("select", { id: "new-type", name: "type", onchange: () => {
    $("new-settings").value = JSON.stringify(TEMPLATES[type.value], null, 2);
  } }, TYPES.map((t) => h("option", { value: t }, t)));
  const result = h("p", { id: "create-result", role: "alert" });
  const form = h("form", { id: "create-source", onsubmit: async (e) => {
    e.preventDefault();
    result.textContent = "";
    result.className = "";
    let settings, extra;
    try {
      settings = JSON.parse($("new-settings").value || "{}");
      extra = JSON.parse($("new-extra").value.trim() || "{}");
    } catch (error) {
      result.className = "error";
      result.textContent = `Not valid JSON: ${error.message}`;
      return;
    }
    const body = Object.assign({}, extra, { database_name: $("new-database").value.trim(), [type.value]: settings });
    const answer = await api("POST", "/api/v1/sources", body);
    if (answer.status === 201) {
      result.textContent = `Source ${answer.body.source_id} created.`;
      // The webhook's signing secret is shown this once (Standard Webhooks).
      if (answer.body.webhook && answer.body.webhook.secret) {
        result.textContent += ` Webhook signing secret (shown once; store it now): ${answer.body.webhook.secret}`;
      }
      await loadSources();
      refreshLive();
    } else {
      result.className = "error";
      result.textContent = `Refused: ${explain(answer)}`;
    }
  } },
  h("fieldset", {},
    h("legend", {}, "Create a source"),
    h("p", { class: "small" }, "The API checks everything (as it does for any client) and its answer is shown below."),
    h("div", { class: "form-grid" },
      h("div", { class: "field" }, h("label", { for: "new-type" }, "Type"), type),
      h("div", { class: "field" }, h("label", { for: "new-database" }, "Database"),
        h("input", { id: "new-database", name: "database_name", required: true }))),
    h("div", { class: "field" },
      h("label", { for: "new-settings" }, "Settings of the type (JSON object)"),
      h("textarea", { id: "new-settings", name: "settings", rows: 8, spellcheck: "false" })),
    h("div", { class: "field" },
      h("label", { for: "new-extra" }, "Other fields, optional (JSON object: schedule, chunking, embedding_model, webhook…)"),
      h("textarea", { id: "new-extra", name: "extra", rows: 3, spellcheck: "false" })),
    h("p", {}, h("button", { type: "submit", class: "primary" }, "Create source")),
    result));
  form.querySelector("#new-settings").value = JSON.stringify(TEMPLATES.s3, null, 2);
  return form;
}

// ---------------------------------------------------------------- invocations

function invocationsView() {
  const filters = h("form", { class: "filters", "aria-label": "Filter invocations", onsubmit: (e) => e.preventDefault() },
    h("div", {},
      h("label", { for: "filter-status" }, "Filter by status"),
      h("select", { id: "filter-status", onchange: async (e) => { state.jobFilter.status = e.target.value; await loadJobs(); refreshLive(); } },
        h("option", { value: "" }, "Any status"),
        STATUSES.map((s) => h("option", { value: s, selected: state.jobFilter.status === s }, s)))),
    h("div", {},
      h("label", { for: "filter-source" }, "Filter by source"),
      h("select", { id: "filter-source", onchange: async (e) => { state.jobFilter.source = e.target.value; await loadJobs(); refreshLive(); } },
        h("option", { value: "" }, "Any source"),
        state.sources.map((s) => h("option", { value: s.id, selected: state.jobFilter.source === s.id },
          `${short(s.id)} ${sourceType(s)} ${s.database_name}/${sourceCollection(s)}`)))));
  return h("section", { "aria-labelledby": "invocations-title" },
    h("h1", { id: "invocations-title" }, "Invocations"),
    filters,
    h("div", { class: "table-wrap" },
      h("table", { id: "invocations-table" },
        h("caption", {}, "Newest first; updates live"),
        h("thead", {}, h("tr", {},
          ["Invocation", "Source", "Status", "Progress", "Created", "Duration", "Error", "Actions"]
            .map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", { "data-live": "jobs" }, jobRows()))));
}

function shownJobs() {
  const f = state.jobFilter;
  return [...state.jobs.values()]
    .filter((j) => (!f.status || statusWord(j) === f.status) && (!f.source || j.source_id === f.source))
    .sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0))
    .slice(0, 200);
}

function jobRows() {
  const jobs = shownJobs();
  if (!jobs.length) return [h("tr", {}, h("td", { colspan: 8 }, "No invocations match."))];
  return jobs.map(jobRow);
}

function progressCell(job) {
  const word = statusWord(job);
  const stats = job.stats || {};
  const counts = `${stats.documents || 0} documents, ${stats.chunks_upserted || 0} chunks, ${bytes(stats.bytes)}`;
  if (word !== "processing") return word === "complete" ? h("span", { class: "small" }, counts) : "";
  const p = job.progress;
  const bar = p && p.total_steps
    ? h("progress", { max: p.total_steps, value: p.step, "aria-label": `Progress of ${short(job.id)}: step ${p.step} of ${p.total_steps}` })
    : h("progress", { "aria-label": `Progress of ${short(job.id)}` });
  return [bar, h("br"), h("span", { class: "small" }, [p && p.message, counts].filter(Boolean).join(" · "))];
}

function jobRow(job) {
  const word = statusWord(job);
  const actions = [];
  if (word === "pending" || word === "processing") {
    actions.push(h("button", { type: "button", class: "danger", "aria-label": `Cancel invocation ${short(job.id)}`,
      disabled: !!job.cancel_requested_at, onclick: () => cancelJob(job) }, job.cancel_requested_at ? "Cancelling…" : "Cancel"));
  }
  if (word === "failed") {
    const body = retryBody(job);
    actions.push(h("button", { type: "button", "aria-label": `Retry invocation ${short(job.id)}`, disabled: !body,
      title: body ? "A new invocation with the same body" : "An upload cannot be retried: its file is gone",
      onclick: () => retryJob(job) }, "Retry"));
  }
  const source = state.sources.find((s) => s.id === job.source_id);
  return h("tr", { "data-invocation": job.id, "data-status": word },
    h("td", {}, h("a", { href: `#/invocations/${job.id}`, class: "mono", title: job.id }, short(job.id))),
    h("td", {}, job.source_id ? [h("code", {}, short(job.source_id)), source ? h("span", { class: "small" }, ` ${sourceType(source)}`) : ""] : jobKind(job),
      h("br"), h("span", { class: "small" }, target(job))),
    h("td", {}, h("span", { class: `status status-${word}` }, word),
      job.cancel_requested_at && word === "processing" ? h("span", { class: "small" }, " (cancel requested)") : ""),
    h("td", {}, progressCell(job)),
    h("td", {}, when(job.created_at)),
    h("td", {}, duration(job)),
    h("td", { class: "err" }, jobError(job)),
    h("td", { class: "actions" }, actions));
}

function target(job) {
  const m = job.metadata || {};
  const kind = jobKind(job);
  const what = kind === "s3" ? m.s3.object_key
    : kind === "filesystem" ? (m.filesystem && m.filesystem.path) || "(whole root)"
    : kind === "github" ? JSON.stringify(m.github.git_ref_identifier)
    : kind === "file" ? m.file.file_name : "";
  return [m.collection_name, what].filter(Boolean).join(" · ");
}

/** The body that created `job`, read back from its metadata; null for uploads. */
function retryBody(job) {
  const m = job.metadata || {};
  if (!job.source_id) return null;
  const body = { target_collection_name: m.collection_name };
  switch (jobKind(job)) {
    case "s3":
      body.object_key = m.s3.object_key;
      if (m.s3.custom_id) body.custom_id = m.s3.custom_id;
      if (m.s3.additional_metadata) body.metadata = m.s3.additional_metadata;
      return body;
    case "github":
      if (m.github && m.github.git_ref_identifier) body.ref_identifier = m.github.git_ref_identifier;
      return body;
    case "filesystem":
      if (m.filesystem && m.filesystem.path) body.path = m.filesystem.path;
      return body;
    case "web_scrape":
      return body;
    default:
      return null;
  }
}

async function cancelJob(job) {
  const result = await api("PUT", `/api/v1/invocations/${job.id}`);
  if (result.status === 202) notice(`Cancel of ${short(job.id)} accepted.`);
  else if (result.status !== 401) notice(`Cancel refused: ${explain(result)}`, true);
  const fresh = await api("GET", `/api/v1/invocations/${job.id}`);
  if (fresh.status === 200) remember(fresh.body);
  refreshLive();
}

async function retryJob(job) {
  const body = retryBody(job);
  if (!body) return;
  const result = await api("POST", `/api/v1/sources/${job.source_id}/invocations`, body);
  if (result.status === 201) {
    notice(`Retried ${short(job.id)} as ${short(result.body.invocation_id)}.`);
    const fresh = await api("GET", `/api/v1/invocations/${result.body.invocation_id}`);
    if (fresh.status === 200) remember(fresh.body);
    refreshLive();
  } else if (result.status !== 401) {
    notice(`Retry refused: ${explain(result)}`, true);
  }
}

// ---------------------------------------------------------------- detail

function detailView(id) {
  const body = h("div", { "data-live": "detail", "data-id": id }, detailBody(id));
  if (!state.jobs.has(id)) {
    api("GET", `/api/v1/invocations/${id}`).then((result) => {
      if (result.status === 200) { remember(result.body); refreshLive(); }
      else if (result.status !== 401) notice(`Could not load invocation ${short(id)}: ${explain(result)}`, true);
    });
  }
  return h("section", { "aria-labelledby": "detail-title" },
    h("p", {}, h("a", { href: "#/invocations" }, "← All invocations")),
    h("h1", { id: "detail-title" }, `Invocation ${short(id)}`),
    body);
}

function detailBody(id) {
  const job = state.jobs.get(id);
  if (!job) return h("p", {}, "Loading…");
  const word = statusWord(job);
  const m = job.metadata || {};
  const stats = job.stats || {};
  const facts = [
    ["Id", h("code", {}, job.id)],
    ["Status", h("span", { class: `status status-${word}` }, word)],
    ["Source", job.source_id ? h("code", {}, job.source_id) : "upload"],
    ["Kind", jobKind(job)],
    ["Database", m.database_name],
    ["Collection", m.collection_name],
    ["Target", target(job)],
    ["Trigger", job.trigger],
    ["Created by", job.created_by || "—"],
    ["Created", when(job.created_at)],
    ["Started", when(job.started_at) || "—"],
    ["Last heartbeat", when(job.last_heartbeat_at) || "—"],
    ["Finished", job.status && job.status.complete ? when(job.status.complete.finished_at) : "—"],
    ["Duration", duration(job) || "—"],
    ["Attempts", String(job.attempt)],
    ["Cancel requested", job.cancel_requested_at ? `${when(job.cancel_requested_at)}${job.cancel_requested_by ? " by " + job.cancel_requested_by : ""}` : "—"],
  ];
  if (stats.commit_sha) facts.push(["Commit", h("code", {}, stats.commit_sha)]);
  if (stats.sync_mode) facts.push(["Sync mode", `${stats.sync_mode}${stats.base_commit_sha ? " since " + stats.base_commit_sha.slice(0, 12) : ""}`]);
  if (job.progress) facts.push(["Progress", `${job.progress.message} (step ${job.progress.step} of ${job.progress.total_steps})`]);
  const error = jobError(job);
  if (error) facts.push([job.status && job.status.failed ? "Error" : "Last error", h("span", { class: "err" }, error)]);
  const counters = [
    ["Documents written", stats.documents], ["Documents unchanged", stats.unchanged], ["Documents skipped", stats.skipped],
    ["Chunks written", stats.chunks_upserted], ["Chunks deleted", stats.chunks_deleted],
    ["Chunks unchanged", stats.chunks_unchanged], ["Chunks re-stamped", stats.chunks_restamped], ["Bytes read", bytes(stats.bytes)],
  ];
  const stages = [["Fetching", stats.fetch_ms], ["Extracting and chunking", stats.extract_ms], ["Embedding", stats.embed_ms],
    ["Waiting for the embedder", stats.embed_wait_ms], ["Writing to Chroma", stats.write_ms]];
  const slowest = Math.max(1, ...stages.map(([, ms]) => ms || 0));
  const actions = [];
  if (word === "pending" || word === "processing") actions.push(h("button", { type: "button", class: "danger", id: "detail-cancel", onclick: () => cancelJob(job) }, "Cancel"));
  if (word === "failed" && retryBody(job)) actions.push(h("button", { type: "button", id: "detail-retry", onclick: () => retryJob(job) }, "Retry"));
  return h("div", {},
    actions.length ? h("p", {}, actions) : null,
    h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v === undefined ? "—" : v)])),
    h("h2", {}, "Stats"),
    h("div", { class: "table-wrap" }, h("table", { id: "detail-stats" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Counter"), h("th", { scope: "col" }, "Value"))),
      h("tbody", {}, counters.map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, v === undefined ? "0" : String(v))))))),
    h("h2", {}, "Time by stage"),
    h("div", { class: "table-wrap" }, h("table", { id: "detail-stages" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Stage"), h("th", { scope: "col" }, "Time"), h("th", { scope: "col" }, "Share"))),
      h("tbody", {}, stages.map(([k, ms]) => h("tr", { class: "stage" }, h("th", { scope: "row" }, k), h("td", {}, seconds(ms || 0)),
        h("td", {}, h("progress", { max: slowest, value: ms || 0, "aria-label": `${k}: ${seconds(ms || 0)}` }))))))),
    listOf("Skipped documents", stats.skipped_reasons),
    listOf("Parts left out", stats.omitted_parts));
}

function listOf(title, map) {
  const entries = Object.entries(map || {});
  if (!entries.length) return null;
  return [h("h2", {}, title), h("ul", {}, entries.map(([k, v]) => h("li", {}, h("code", {}, k), `: ${v}`)))];
}

// ---------------------------------------------------------------- health

function healthView() {
  const body = h("div", { id: "health-body" }, h("p", {}, "Loading…"));
  loadHealth(body);
  return h("section", { "aria-labelledby": "health-title" },
    h("h1", { id: "health-title" }, "Health"),
    h("p", {}, h("button", { type: "button", id: "health-reload", onclick: () => loadHealth(body) }, "Refresh")),
    body);
}

/** Prometheus text → {"name{labels}": value}. */
function parseMetrics(text) {
  const values = {};
  for (const line of String(text || "").split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    values[line.slice(0, space)] = Number(line.slice(space + 1));
  }
  return values;
}

function sum(values, prefix) {
  return Object.entries(values).filter(([k]) => k.startsWith(prefix)).reduce((a, [, v]) => a + v, 0);
}

async function loadHealth(body) {
  const [health, metrics, processing] = await Promise.all([
    api("GET", "/health"), api("GET", "/metrics"), api("GET", "/api/v1/invocations?status=processing&limit=1000")]);
  const values = parseMetrics(metrics.body);
  const finished = (outcome) => values[`chroma_syncd_jobs_finished_total{outcome="${outcome}"}`] || 0;
  const now = { at: Date.now(), complete: finished("complete"), failed: finished("failed"), retry: finished("retry") };
  const before = state.metrics;
  state.metrics = now;
  let rate = "— (refresh again to compare)";
  if (before) {
    const ended = (now.complete - before.complete) + (now.failed - before.failed) + (now.retry - before.retry);
    const bad = (now.failed - before.failed) + (now.retry - before.retry);
    rate = ended ? `${Math.round((100 * bad) / ended)}% of ${ended} attempts in the last ${Math.round((now.at - before.at) / 1000)} s` : `no attempt ended in the last ${Math.round((now.at - before.at) / 1000)} s`;
  }
  const h0 = health.body || {};
  const card = (label, value, id) => h("div", { class: "card", id }, h("div", { class: "small" }, label), h("div", { class: "value" }, value));
  body.replaceChildren(
    h("div", { class: "cards" },
      card("Daemon", h0.status || `HTTP ${health.status}`, "health-status"),
      card("Queue", h0.queue || "?", "health-queue"),
      card("Chroma", h0.chroma === "ok" ? "reachable" : (h0.chroma || "?"), "health-chroma"),
      card("Queue depth (pending)", String(values["chroma_syncd_queue_pending_jobs"] ?? "?"), "health-pending"),
      card("Workers busy (processing, your databases)", processing.status === 200 ? String(processing.body.length) : explain(processing), "health-busy")),
    h("h2", {}, "Job attempts since the daemon started"),
    h("dl", { class: "facts" },
      [["Complete", now.complete], ["Failed", now.failed], ["Retried", now.retry], ["Cancelled", finished("cancelled")],
        ["Recent error rate", rate],
        ["Documents processed", sum(values, "chroma_syncd_documents_total")],
        ["Chunks written", sum(values, "chroma_syncd_chunks_upserted_total")],
        ["Failed requests to dependencies", sum(values, "chroma_syncd_request_errors_total")]]
        .map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])));
}

// ---------------------------------------------------------------- start

$("signin-form").addEventListener("submit", signIn);
$("signout").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
// Durations of processing jobs move on without events.
setInterval(() => { if (state.signedIn) refreshLive(); }, 5000);
start();
