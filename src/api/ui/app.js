// chroma-syncd dashboard: vanilla JavaScript, no build step, no third-party
// code. Everything it shows or does goes through the public API with the
// token the user typed, so it can do nothing that token cannot.
"use strict";

const TOKEN_KEY = "chroma-syncd-token";
const STATUSES = ["pending", "processing", "complete", "failed", "cancelled"];
// Every job's metadata has these; its one other key names its kind.
const COMMON_METADATA = ["database_name", "collection_name"];

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  signedIn: false,
  sources: [],
  // The daemon's source kinds (GET /api/v1/source-types): their settings'
  // JSON Schema and invocation fields. The page knows no kind of its own.
  types: [],
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

/** The key of a job's metadata that names its kind (a source type, or an upload's). */
function jobKind(job) {
  const m = job.metadata || {};
  return Object.keys(m).find((key) => !COMMON_METADATA.includes(key)) || "unknown";
}

/** The entry of the daemon's source types `source` is of (null if none). */
function kindOf(source) {
  return state.types.find((t) => source[t.config_field]) || null;
}

function typeNamed(name) {
  return state.types.find((t) => t.type === name) || null;
}

function sourceType(source) {
  const kind = kindOf(source);
  return kind ? kind.type : "unknown";
}

function settingsOf(source) {
  const kind = kindOf(source);
  return (kind && source[kind.config_field]) || {};
}

function sourceCollection(source) {
  const settings = settingsOf(source);
  return settings.collection_name || (source.schedule && source.schedule.target_collection_name) || "";
}

/** What the source reads: the first setting its kind requires. */
function sourceWhat(source) {
  const kind = kindOf(source);
  const first = kind && (kind.schema.required || [])[0];
  return first ? brief(settingsOf(source)[first]) : "";
}

/** A value in a few words: text as is, `{"branch": "main"}` as `branch main`. */
function brief(value) {
  if (value === undefined || value === null) return "";
  if (Array.isArray(value)) return value.map(brief).join(", ");
  if (typeof value === "object") {
    const entries = Object.entries(value);
    return entries.length === 1 ? `${entries[0][0]} ${brief(entries[0][1])}` : JSON.stringify(value);
  }
  return String(value);
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

/** Loads the sources and the source types; on success the views and the
 *  event stream start. */
async function start() {
  const [result, types] = await Promise.all([
    api("GET", "/api/v1/sources?limit=1000"), api("GET", "/api/v1/source-types")]);
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
  if (types.status === 200) state.types = types.body.source_types;
  else notice(`Could not load the source types: ${explain(types)}`, true);
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
  for (const input of document.querySelectorAll("[data-live] input, [data-live] textarea, [data-live] select, [data-live] details")) {
    if (input.id) typed.set(input.id, { value: input.value, checked: input.checked, open: input.open });
  }
  for (const body of document.querySelectorAll("[data-live]")) {
    const kind = body.dataset.live;
    if (kind === "jobs") body.replaceChildren(...jobRows());
    else if (kind === "sources") body.replaceChildren(...sourceRows());
    else if (kind === "detail") body.replaceChildren(detailBody(body.dataset.id));
  }
  for (const [id, was] of typed) {
    const input = $(id);
    if (!input) continue;
    if (input.tagName === "DETAILS") input.open = was.open;
    else if (input.type === "checkbox") input.checked = was.checked;
    else if (input.value !== was.value) {
      input.value = was.value;
      input.dispatchEvent(new Event("change"));
    }
  }
  if (focused && document.activeElement && document.activeElement.id !== focused) {
    const again = $(focused);
    if (again) again.focus();
  }
}

// ---------------------------------------------------------------- forms from JSON Schema

/** `collection_name` → `Collection name`. */
function humanize(name) {
  const words = String(name).replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** `schema` without its `null` alternative: `["string", "null"]` is a
 *  string, `oneOf: [{type: null}, X]` is X (keeping the field's own
 *  description and default). */
function plain(schema) {
  let s = schema || {};
  for (const key of ["oneOf", "anyOf"]) {
    if (!Array.isArray(s[key])) continue;
    const options = s[key].filter((option) => option.type !== "null");
    if (options.length === 1) {
      const rest = Object.assign({}, s);
      delete rest[key];
      s = Object.assign({}, options[0], rest);
    }
  }
  if (Array.isArray(s.type)) {
    const types = s.type.filter((t) => t !== "null");
    s = Object.assign({}, s, { type: types.length === 1 ? types[0] : types });
  }
  return s;
}

function sameValue(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * One field of a form generated from its JSON Schema: text, number,
 * checkbox, a list (one item per line), a choice (an enum, or one of
 * several shapes), a fieldset of nested fields, or JSON for anything else.
 * Returns {node, read}: `read()` gives the value to send, `undefined` to
 * leave the field out (empty, or an optional field at its default), or
 * throws an Error saying what is wrong with what was typed.
 *
 * options: id (unique, prefixes nested ids), path (the field's dotted
 * name, `data-field`), required, initial (a value to show), placeholder,
 * compact (help as a tooltip), native (let the browser enforce `required`),
 * legend (of a fieldset, instead of the name).
 */
function schemaField(name, schema, options) {
  const s = plain(schema);
  const id = options.id;
  const help = [s.description, s.default !== undefined && !options.compact ? `Default: ${s.default === "" ? "empty" : brief(s.default)}.` : ""]
    .filter(Boolean).join(" ");
  const helpId = help ? `${id}-help` : undefined;
  const initial = options.initial !== undefined ? options.initial : s.default;
  const optionalAtDefault = (value) => !options.required && s.default !== undefined && sameValue(value, s.default);
  const common = {
    id, "data-field": options.path || name, "aria-describedby": options.compact ? undefined : helpId,
    "aria-required": options.required ? "true" : undefined, required: options.required && options.native,
    title: options.compact ? help : undefined,
  };
  const label = (text) => [h("label", { for: id }, text || humanize(name)),
    options.required ? h("span", { class: "req", "aria-hidden": "true" }, " required") : null];
  const helpNode = help && !options.compact ? h("p", { class: "help", id: helpId }, help) : null;
  const field = (control) => h("div", { class: "field" }, h("span", {}, label()), control, helpNode);
  const alternatives = (s.oneOf || s.anyOf || []).filter((option) => option.type !== "null");

  if (Array.isArray(s.enum)) {
    const select = h("select", Object.assign({ name }, common),
      options.required ? null : h("option", { value: "" }, s.default !== undefined ? `(default: ${brief(s.default)})` : "(not set)"),
      s.enum.map((value) => h("option", { value, selected: sameValue(value, initial) }, String(value))));
    return { node: field(select), read: () => {
      if (select.value === "") return undefined;
      const value = s.enum.find((v) => String(v) === select.value);
      return optionalAtDefault(value) ? undefined : value;
    } };
  }
  if (alternatives.length > 1) {
    // One of several shapes: choose the shape, then fill it in.
    const title = (option, i) => option.title || (option.properties && Object.keys(option.properties).length === 1
      ? Object.keys(option.properties)[0] : `option ${i + 1}`);
    const holder = h("div", { class: "choice" });
    let chosen = null;
    // A shape with one property (`{"branch": …}`) is filled in as that property.
    const only = (option) => (plain(option).type === "object" && option.properties
      && Object.keys(option.properties).length === 1 ? Object.keys(option.properties)[0] : null);
    const fieldOf = (option, i) => {
      const key = only(option);
      const inner = schemaField(key || title(option, i), key ? option.properties[key] : option,
        { id: `${id}-${i}`, path: `${options.path || name}.${title(option, i)}`, required: true, compact: options.compact });
      if (!key) return inner;
      return { node: inner.node, read: () => {
        const value = inner.read();
        return value === undefined ? undefined : { [key]: value };
      } };
    };
    const select = h("select", Object.assign({ name }, common, { onchange: () => {
      const i = select.value === "" ? -1 : Number(select.value);
      chosen = i < 0 ? null : fieldOf(alternatives[i], i);
      holder.replaceChildren(chosen ? chosen.node : "");
    } }),
    options.required ? null : h("option", { value: "" }, "(not set)"),
    alternatives.map((option, i) => h("option", { value: String(i) }, title(option, i))));
    if (options.required) select.dispatchEvent(new Event("change"));
    return { node: h("div", { class: "field" }, h("span", {}, label()), select, helpNode, holder),
      read: () => (chosen ? chosen.read() : undefined) };
  }
  if (s.type === "boolean") {
    const box = h("input", Object.assign({ type: "checkbox", name, checked: initial === true }, common));
    return { node: h("div", { class: "field check" }, h("span", {}, box, " ", label()), helpNode), read: () => {
      if (optionalAtDefault(box.checked) || (!options.required && s.default === undefined && !box.checked)) return undefined;
      return box.checked;
    } };
  }
  if (s.type === "integer" || s.type === "number") {
    const input = h("input", Object.assign({ type: "number", name, inputmode: "numeric",
      step: s.type === "integer" ? "1" : "any", min: s.minimum, max: s.maximum,
      value: initial === undefined ? undefined : String(initial), placeholder: options.placeholder }, common));
    return { node: field(input), read: () => {
      const text = input.value.trim();
      if (text === "") return undefined;
      const value = Number(text);
      if (!Number.isFinite(value) || (s.type === "integer" && !Number.isInteger(value))) {
        throw new Error(`${humanize(name)}: \`${text}\` is not ${s.type === "integer" ? "a whole number" : "a number"}`);
      }
      return optionalAtDefault(value) ? undefined : value;
    } };
  }
  if (s.type === "string") {
    const input = h("input", Object.assign({ type: "text", name, spellcheck: "false",
      value: initial === undefined ? undefined : String(initial), placeholder: options.placeholder }, common));
    return { node: field(input), read: () => {
      const value = input.value.trim();
      return value === "" || optionalAtDefault(value) ? undefined : value;
    } };
  }
  if (s.type === "array" && plain(s.items).type === "string") {
    const area = h("textarea", Object.assign({ name, rows: 3, spellcheck: "false",
      value: Array.isArray(initial) ? initial.join("\n") : undefined }, common));
    const node = h("div", { class: "field" }, h("span", {}, label(), h("span", { class: "small" }, " (one per line)")), area, helpNode);
    return { node, read: () => {
      const items = area.value.split("\n").map((line) => line.trim()).filter(Boolean);
      return items.length === 0 || optionalAtDefault(items) ? undefined : items;
    } };
  }
  if (s.type === "object" && s.properties && Object.keys(s.properties).length) {
    const required = s.required || [];
    // Required fields first, in the schema's order; then the others.
    const rank = (key) => (required.includes(key) ? required.indexOf(key) : required.length);
    const entries = Object.entries(s.properties).sort(([a], [b]) => rank(a) - rank(b) || a.localeCompare(b));
    const children = entries.map(([child, childSchema]) => [child, schemaField(child, childSchema, {
      id: `${id}-${child}`, path: `${options.path || name}.${child}`, required: required.includes(child),
      initial: initial && typeof initial === "object" ? initial[child] : undefined, compact: options.compact,
      native: options.native })]);
    const node = h("fieldset", { id, "data-field": options.path || name, "aria-describedby": helpId },
      h("legend", {}, options.legend || humanize(name), options.required && !options.legend ? h("span", { class: "req" }, " required") : null),
      helpNode, h("div", { class: "form-grid" }, children.map(([, child]) => child.node)));
    return { node, read: () => {
      const value = {};
      for (const [child, control] of children) {
        const v = control.read();
        if (v !== undefined) value[child] = v;
      }
      return Object.keys(value).length || options.required ? value : undefined;
    } };
  }
  // A free-form object, a list of objects…: JSON.
  const area = h("textarea", Object.assign({ name, rows: 3, spellcheck: "false",
    value: initial === undefined ? undefined : JSON.stringify(initial, null, 2) }, common));
  const node = h("div", { class: "field" }, h("span", {}, label(), h("span", { class: "small" }, " (JSON)")), area, helpNode);
  return { node, read: () => {
    const text = area.value.trim();
    if (text === "") return undefined;
    try {
      return JSON.parse(text);
    } catch (error) {
      throw new Error(`${humanize(name)}: not valid JSON (${error.message})`);
    }
  } };
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
        state.types.map((t) => h("option", { value: t.type, selected: state.sourceFilter.type === t.type }, t.title)))),
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
  const kind = kindOf(source);
  const last = state.lastBySource.get(source.id);
  const schedule = source.schedule
    ? [h("code", {}, source.schedule.cron), source.schedule.time_zone ? ` (${source.schedule.time_zone})` : "",
      h("br"), h("a", { href: `#/sources`, class: "small", "data-slots": source.id, onclick: (e) => { e.preventDefault(); showSlots(source, e.target); } }, "latest slots")]
    : "—";
  return h("tr", { "data-source": source.id },
    h("td", {}, h("code", { title: source.id }, short(source.id)), h("br"), h("span", { class: "small" }, sourceWhat(source))),
    h("td", { title: kind ? kind.description : undefined }, kind ? kind.title : "unknown"),
    h("td", {}, source.database_name),
    h("td", {}, sourceCollection(source) || "—"),
    h("td", {}, schedule),
    h("td", {}, settingsOf(source).auto_sync || "none"),
    h("td", {}, last
      ? [h("a", { href: `#/invocations/${last.id}` }, h("span", { class: `status status-${statusWord(last)}` }, statusWord(last))),
        h("br"), h("span", { class: "small" }, when(last.created_at))]
      : "never"),
    h("td", { class: "actions" }, syncForm(source, kind)));
}

/** The invocation form of a source's row, from its kind's invocation
 *  fields: the first inline, the others behind "More fields". */
function syncForm(source, kind) {
  const schema = (kind && kind.invocation_schema) || { properties: {}, required: [] };
  const required = schema.required || [];
  const controls = (kind ? kind.invocation_fields : []).map((name) => {
    const needed = required.includes(name);
    // The collection: prefilled where it must be given, else its default shown.
    const collection = name === "target_collection_name" ? sourceCollection(source) : "";
    return [name, schemaField(name, schema.properties[name], {
      id: `sync-${source.id}-${name}`, required: needed, native: true, compact: true,
      initial: needed && collection ? collection : undefined, placeholder: needed ? undefined : collection || undefined })];
  });
  const [first, ...rest] = controls;
  return h("form", { "aria-label": `Sync source ${short(source.id)}`, onsubmit: (e) => { e.preventDefault(); syncNow(source, controls); } },
    first ? first[1].node : null,
    rest.length ? h("details", { id: `sync-${source.id}-more` }, h("summary", { class: "small" }, "More fields"),
      rest.map(([, control]) => control.node)) : null,
    h("button", { type: "submit", class: "primary" }, "Sync now"),
    h("button", { type: "button", class: "danger", onclick: () => deleteSource(source) }, "Delete"));
}

async function showSlots(source, link) {
  const result = await api("GET", `/api/v1/sources/${source.id}/schedule/slots?limit=5`);
  if (result.status !== 200) { notice(explain(result), true); return; }
  const slots = result.body.slots || [];
  link.replaceWith(h("span", { class: "small" },
    slots.length ? slots.map((s) => `${when(s.slot)}: ${typeof s.outcome === "string" ? s.outcome : JSON.stringify(s.outcome)}`).join("; ") : "no slot fired yet"));
}

async function syncNow(source, controls) {
  const body = {};
  try {
    for (const [name, control] of controls) {
      const value = control.read();
      if (value !== undefined) body[name] = value;
    }
  } catch (error) {
    notice(`Not sent: ${error.message}`, true);
    return;
  }
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

/** The create form: a kind chooser, then the kind's settings as fields
 *  generated from its schema (with their documentation and defaults). */
function createSourceForm() {
  const result = h("p", { id: "create-result", role: "alert" });
  const about = h("p", { id: "new-type-about", class: "small" });
  const holder = h("div", { id: "new-settings" });
  let settings = null;
  const type = h("select", { id: "new-type", name: "type", "aria-describedby": "new-type-about", onchange: () => {
    const kind = typeNamed(type.value);
    about.textContent = kind ? kind.description : "";
    settings = kind ? schemaField(kind.config_field, kind.schema,
      { id: "new-setting", path: kind.config_field, required: true, legend: `Settings: ${kind.title}` }) : null;
    holder.replaceChildren(settings ? settings.node : h("p", {}, "This daemon listed no source types."));
  } }, state.types.map((t) => h("option", { value: t.type }, `${t.title} (${t.type})`)));
  // The API checks everything: the browser's own checks would hide its answer.
  const form = h("form", { id: "create-source", novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    result.textContent = "";
    result.className = "";
    const kind = typeNamed(type.value);
    let values, extra;
    try {
      values = settings ? settings.read() : {};
      extra = JSON.parse($("new-extra").value.trim() || "{}");
    } catch (error) {
      result.className = "error";
      result.textContent = error instanceof SyntaxError ? `Other fields: not valid JSON (${error.message})` : error.message;
      return;
    }
    if (!kind) return;
    const body = Object.assign({}, extra, { database_name: $("new-database").value.trim(), [kind.config_field]: values });
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
        h("input", { id: "new-database", name: "database_name", "aria-required": "true" }))),
    about,
    holder,
    h("div", { class: "field" },
      h("label", { for: "new-extra" }, "Other fields, optional (JSON object: schedule, chunking, embedding_model, webhook…)"),
      h("textarea", { id: "new-extra", name: "extra", rows: 3, spellcheck: "false" })),
    h("p", {}, h("button", { type: "submit", class: "primary" }, "Create source")),
    result));
  type.dispatchEvent(new Event("change"));
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

/** The collection and what the invocation asked for: the fields its kind
 *  records from the invocation body (an upload: its file). */
function target(job) {
  const m = job.metadata || {};
  const details = m[jobKind(job)];
  const kind = typeNamed(jobKind(job));
  let what = [];
  if (kind && details && typeof details === "object") {
    what = Object.values(kind.job_metadata_fields).map((field) => brief(details[field]));
  } else if (details && typeof details === "object") {
    what = Object.values(details).filter((value) => typeof value === "string");
  }
  return [m.collection_name, ...what].filter(Boolean).join(" · ");
}

/** The body that created `job`, read back from its metadata with the
 *  fields its kind records; null for uploads. */
function retryBody(job) {
  const kind = typeNamed(jobKind(job));
  if (!job.source_id || !kind) return null;
  const m = job.metadata || {};
  const recorded = m[kind.type] || {};
  const body = { target_collection_name: m.collection_name };
  for (const [field, from] of Object.entries(kind.job_metadata_fields)) {
    if (recorded[from] !== undefined && recorded[from] !== null) body[field] = recorded[from];
  }
  return body;
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
