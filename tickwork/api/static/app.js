// tickwork dashboard: vanilla JS, no build step. Every request carries the token from
// sessionStorage as a bearer token; a 401 sends the user back to the login form.
"use strict";

const TOKEN_KEY = "tickwork.token";
const REFRESH_MS = 3000;
const PAGE = 50;
const STATUS_COLORS = {
  SUCCESS: "#12b76a", FAILED: "#f04438", DEAD: "#912018", RUNNING: "#2e90fa",
  PENDING: "#fdb022", REPLAYED: "#98a2b3", DISCARDED: "#667085", MISSED: "#7a5af8", SKIPPED: "#d0d5dd",
};

let timer = null;
let jobsCursor = [0]; // afterId of each page visited, for "previous"
let jobsFilter = "";
let tagFilter = "";
let eventsCursor = [null]; // beforeId of each page visited
let eventsKind = "";
// An open edit form: the periodic refresh leaves the job view alone until it is saved or closed.
let editing = null;
const EVENT_KINDS = ["job.created", "job.updated", "job.deleted", "job.paused", "job.resumed", "job.triggered", "job.backfilled", "run.replayed", "run.purged"];
let healthFilter = ""; // issue 13: "", healthy, late, failing or paused

// ---- helpers ----
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    // Styles through the CSSOM: the Content-Security-Policy (style-src 'self') blocks style attributes.
    else if (key === "style") Object.assign(el.style, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function role() {
  try {
    const payload = JSON.parse(atob(token().split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return payload.role || "?";
  } catch (e) { return "?"; }
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body, extraHeaders) {
  return (await apiResponse(method, path, body, extraHeaders)).data;
}

// The answer's JSON and its headers (the ETag of a job read).
async function apiResponse(method, path, body, extraHeaders) {
  const headers = { Authorization: "Bearer " + token(), Accept: "application/json", ...(extraHeaders || {}) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("Your token was refused (missing, invalid or expired). Log in again.");
    throw new ApiError(401, "unauthorized");
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
  if (!response.ok) throw new ApiError(response.status, describeError(response.status, data));
  return { data, headers: response.headers };
}

// A trigger with an Idempotency-Key: a double click or a retried request makes one run.
function trigger(jobId) {
  const key = (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()).replace(/\s/g, "");
  return api("POST", "/jobs/" + jobId + "/trigger", undefined, { "Idempotency-Key": key });
}

function describeError(status, data) {
  if (data && Array.isArray(data.detail)) {
    return data.detail.map((d) => (d.field ? d.field + ": " : "") + (d.reason || d.msg || JSON.stringify(d))).join("; ");
  }
  if (data && data.detail) return String(data.detail);
  return "HTTP " + status;
}

function flash(message, isError) {
  const el = document.getElementById("flash");
  el.textContent = message;
  el.className = isError ? "error" : "";
  el.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { el.hidden = true; }, 6000);
}

function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z").replace("Z", " UTC");
}

function ago(iso) {
  if (!iso) return "";
  const s = Math.round((Date.parse(iso) - Date.now()) / 1000);
  const abs = Math.abs(s);
  const text = abs < 90 ? abs + " s" : abs < 5400 ? Math.round(abs / 60) + " min" : Math.round(abs / 3600) + " h";
  return s >= 0 ? "in " + text : text + " ago";
}

// Issue 13: a job's health (healthy, late, failing, paused), with why it is paused.
function healthBadge(job) {
  const title = job.pausedReason ? "paused: " + job.pausedReason : job.lastSuccessAt ? "last success " + when(job.lastSuccessAt) : "no success yet";
  return h("span", { class: "badge health h-" + job.health, "data-health": job.health, title: title }, job.health);
}

function badge(status) { return status ? h("span", { class: "badge s-" + status }, status) : h("span", { class: "muted" }, "never run"); }

function schedule(job) {
  if (job.cronExpression) return job.cronExpression + (job.timezone && job.timezone !== "UTC" ? " (" + job.timezone + ")" : "");
  if (job.runAt) return "once at " + when(job.runAt);
  return "on demand";
}

function isAdmin() { return role() === "admin"; }

async function act(label, fn) {
  try { const message = await fn(); flash(message || label + ": done"); render(); }
  catch (e) { if (e.status !== 401) flash(label + " failed: " + e.message, true); }
}

// ---- views ----
const views = {
  async jobs(view) {
    const after = jobsCursor[jobsCursor.length - 1];
    const query = "/dashboard/jobs?limit=" + PAGE + "&afterId=" + after + (jobsFilter ? "&name=" + encodeURIComponent(jobsFilter) : "")
      + (tagFilter ? "&tag=" + encodeURIComponent(tagFilter) : "") + (healthFilter ? "&health=" + healthFilter : "");
    const page = await api("GET", query);
    const rows = page.items.map((job) => h("tr", { "data-job": job.name },
      h("td", { class: "num" }, job.id),
      h("td", {}, h("a", { href: "#/jobs/" + job.id }, job.name), tagList(job.tags)),
      h("td", {}, schedule(job)),
      h("td", {}, job.handlerType, h("div", { class: "muted" }, job.handlerData)),
      h("td", {}, job.enabled ? [when(job.nextFireAt), h("div", { class: "muted" }, ago(job.nextFireAt))] : h("span", { class: "paused" }, "paused")),
      h("td", {}, badge(job.lastStatus), h("div", { class: "muted" }, ago(job.lastRunAt))),
      h("td", {}, healthBadge(job), job.pausedReason ? h("div", { class: "muted" }, job.pausedReason) : null),
      h("td", {},
        h("button", { type: "button", disabled: !isAdmin(), onclick: () => act(job.enabled ? "Pause" : "Resume", async () => {
          await api("POST", "/jobs/" + job.id + (job.enabled ? "/pause" : "/resume"));
          return (job.enabled ? "Paused " : "Resumed ") + job.name;
        }) }, job.enabled ? "Pause" : "Resume"), " ",
        h("button", { type: "button", disabled: !isAdmin(), onclick: () => act("Trigger", async () => {
          const run = await trigger(job.id);
          return "Triggered " + job.name + ": run " + run.id;
        }) }, "Trigger"))));
    view.replaceChildren(
      h("h1", {}, "Jobs"),
      h("div", { class: "toolbar" },
        h("input", { id: "job-filter", placeholder: "name contains…", value: jobsFilter, onchange: (e) => { jobsFilter = e.target.value.trim(); jobsCursor = [0]; render(true); } }),
        h("input", { id: "tag-filter", placeholder: "tag", value: tagFilter, onchange: (e) => { tagFilter = e.target.value.trim(); jobsCursor = [0]; render(true); } }),
        h("select", { id: "health-filter", "aria-label": "health", onchange: (e) => { healthFilter = e.target.value; jobsCursor = [0]; render(true); } },
          ["", "healthy", "late", "failing", "paused"].map((value) => h("option", { value: value, selected: value === healthFilter }, value ? value : "any health"))),
        h("button", { type: "button", disabled: jobsCursor.length < 2, onclick: () => { jobsCursor.pop(); render(true); } }, "← Previous"),
        h("button", { type: "button", disabled: page.nextAfterId === null, onclick: () => { jobsCursor.push(page.nextAfterId); render(true); } }, "Next →"),
        h("span", { class: "muted" }, "page " + jobsCursor.length + ", " + page.items.length + " jobs")),
      h("table", { id: "jobs-table" },
        h("thead", {}, h("tr", {}, ["Id", "Name", "Schedule", "Handler", "Next fire", "Last run", "Health", "Actions"].map((t) => h("th", {}, t)))),
        h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 8, class: "muted" }, healthFilter ? "No " + healthFilter + " jobs." : "No jobs yet.")))),
      ...createForm());
  },

  async job(view, id) {
    const [read, fires, runs, events] = await Promise.all([
      apiResponse("GET", "/jobs/" + id),
      api("GET", "/jobs/" + id + "/next-fires?count=5"),
      api("GET", "/jobs/" + id + "/runs?limit=25"),
      api("GET", "/jobs/" + id + "/events?limit=20"),
    ]);
    const job = read.data;
    const etag = read.headers.get("ETag");
    const props = [
      ["Schedule", schedule(job)], ["Handler", job.handlerType + " " + job.handlerData],
      ["Queue", job.queue], ["Retries", job.retryCount + " (backoff " + job.retryBackoffSeconds + " s, max " + job.maxBackoffSeconds + " s)"],
      ["Timeout", job.timeoutSeconds ? job.timeoutSeconds + " s" : "none"], ["State", job.enabled ? "active" : "paused" + (job.pausedReason ? " (" + job.pausedReason + ")" : "")],
      ["Health", healthBadge(job)], ["Last success", job.lastSuccessAt ? when(job.lastSuccessAt) : "never"],
      ["Tags", job.tags && job.tags.length ? job.tags.join(", ") : "none"],
      ["Max concurrency", job.maxConcurrency == null ? "unlimited" : String(job.maxConcurrency)],
      ["Version", String(job.version)],
      ["Next fires", fires.fires.length ? fires.fires.map(when).join(", ") : "none"],
    ];
    view.replaceChildren(
      h("h1", {}, "Job ", h("span", { id: "job-name" }, job.name)),
      h("div", { class: "toolbar" },
        h("a", { href: "#/jobs" }, "← all jobs"),
        h("button", { type: "button", disabled: !isAdmin(), onclick: () => act("Trigger", async () => {
          const run = await trigger(id);
          return "Triggered " + job.name + ": run " + run.id;
        }) }, "Trigger now"),
        h("button", { type: "button", disabled: !isAdmin(), onclick: () => act(job.enabled ? "Pause" : "Resume", async () => {
          await api("POST", "/jobs/" + id + (job.enabled ? "/pause" : "/resume"));
        }) }, job.enabled ? "Pause" : "Resume"),
        h("button", { type: "button", id: "edit-job", disabled: !isAdmin(), onclick: () => openEditor(view, job, etag) }, "Edit"),
        h("button", { type: "button", id: "delete-job", class: "danger", disabled: !isAdmin(), onclick: () => deleteJob(job) }, "Delete")),
      h("dl", { class: "props" }, props.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      h("div", { id: "editor" }),
      isAdmin() ? backfillForm(job) : null,
      h("h2", {}, "Runs"),
      runsTable(runs.items, false),
      h("h2", {}, "Changes"),
      eventsTable(events.items, false));
  },

  async events(view) {
    const before = eventsCursor[eventsCursor.length - 1];
    const page = await api("GET", "/events?limit=" + PAGE + (before ? "&beforeId=" + before : "") + (eventsKind ? "&kind=" + encodeURIComponent(eventsKind) : ""));
    view.replaceChildren(
      h("h1", {}, "Events"),
      h("p", { class: "muted" }, "Every change to a job or a run: who, what, when, and for definition changes the fields before and after."),
      h("div", { class: "toolbar" },
        h("select", { id: "event-kind", onchange: (e) => { eventsKind = e.target.value; eventsCursor = [null]; render(true); } },
          h("option", { value: "" }, "all kinds"), EVENT_KINDS.map((k) => h("option", { value: k, selected: k === eventsKind }, k))),
        h("button", { type: "button", disabled: eventsCursor.length < 2, onclick: () => { eventsCursor.pop(); render(true); } }, "← Newer"),
        h("button", { type: "button", disabled: page.nextBeforeId === null, onclick: () => { eventsCursor.push(page.nextBeforeId); render(true); } }, "Older →")),
      eventsTable(page.items, true));
  },

  async dlq(view) {
    const page = await api("GET", "/dlq?limit=" + PAGE);
    view.replaceChildren(
      h("h1", {}, "Dead letters"),
      h("p", { class: "muted" }, "Runs whose retries are spent. Replay one to run it again as a new attempt."),
      runsTable(page.items, true));
  },

  async cluster(view) {
    const c = await api("GET", "/cluster");
    const leaderId = c.leader ? c.leader.nodeId : null;
    const nodeRows = c.schedulers.map((n) => h("tr", {},
      h("td", {}, n.nodeId || n.key, n.nodeId && n.nodeId === leaderId ? [" ", h("span", { class: "badge s-SUCCESS" }, "leader")] : null),
      h("td", {}, n.host || "–"), h("td", { class: "num" }, n.pid || "–"),
      h("td", {}, when(n.startedAt)), h("td", { class: "num" }, n.ttlSeconds == null ? "–" : n.ttlSeconds + " s")));
    const workerRows = c.workers.map((w) => h("tr", {},
      h("td", {}, w.workerId || w.key), h("td", {}, w.host || "–"), h("td", { class: "num" }, w.pid || "–"),
      h("td", {}, when(w.startedAt)),
      h("td", {}, w.beatAt ? [when(w.beatAt), h("div", { class: "muted" }, ago(w.beatAt))] : "–"),
      h("td", { class: "num" }, w.ttlSeconds == null ? "–" : w.ttlSeconds + " s"),
      h("td", {}, details(w))));
    view.replaceChildren(
      h("h1", {}, "Cluster"),
      h("div", { class: "cards" },
        h("div", { class: "card" }, h("div", { class: "muted" }, "Leader"), h("div", { class: "big", id: "leader" }, leaderId || "none"),
          c.leader ? h("div", { class: "muted" }, "lease " + c.leader.ttlMs + " ms left") : null),
        h("div", { class: "card" }, h("div", { class: "muted" }, "Schedulers"), h("div", { class: "big" }, c.schedulers.length)),
        h("div", { class: "card" }, h("div", { class: "muted" }, "Live workers"), h("div", { class: "big", id: "live-workers" }, c.workers.length)),
        h("div", { class: "card" }, h("div", { class: "muted" }, "Dead letters"), h("div", { class: "big" }, c.dlqSize)),
        h("div", { class: "card" }, h("div", { class: "muted" }, "Pending runs"), h("div", { class: "big" }, c.pendingRuns))),
      h("p", { class: "muted" }, "mode: " + c.mode + " · redis: " + c.redis + " · namespace: " + c.namespace),
      h("h2", {}, "Scheduler nodes"),
      h("table", {}, h("thead", {}, h("tr", {}, ["Node", "Host", "Pid", "Started", "Presence TTL"].map((t) => h("th", {}, t)))),
        h("tbody", {}, nodeRows.length ? nodeRows : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No scheduler node is alive.")))),
      h("h2", {}, "Workers"),
      h("table", {}, h("thead", {}, h("tr", {}, ["Worker", "Host", "Pid", "Started", "Last heartbeat", "TTL", "Details"].map((t) => h("th", {}, t)))),
        h("tbody", {}, workerRows.length ? workerRows : h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No worker heartbeat.")))));
  },

  async charts(view) {
    const t = await api("GET", "/stats/timeline?minutes=60");
    view.replaceChildren(
      h("h1", {}, "Last hour"),
      h("h2", {}, "Runs per minute by status"),
      h("div", { class: "chart", id: "runs-chart" }, runsChart(t)),
      h("h2", {}, "Scheduling lag (scheduled time → start of first attempt)"),
      h("div", { class: "chart", id: "lag-chart" }, lagChart(t)));
  },
};

function details(item) {
  const rest = Object.entries(item).filter(([k]) => !["key", "workerId", "host", "pid", "ttlSeconds", "beatAt", "startedAt"].includes(k));
  return rest.length ? h("pre", {}, JSON.stringify(Object.fromEntries(rest))) : h("span", { class: "muted" }, "–");
}

function tagList(tags) {
  if (!tags || !tags.length) return null;
  return h("div", { class: "tags" }, tags.map((t) => h("a", { class: "tag", href: "#/jobs", onclick: () => { tagFilter = t; jobsCursor = [0]; render(true); } }, t)));
}

function describeEvent(e) {
  const d = e.details || {};
  if (d.changes && (e.kind === "job.updated" || e.kind === "job.paused" || e.kind === "job.resumed")) {
    return Object.entries(d.changes).map(([field, c]) => field + ": " + JSON.stringify(c.before) + " → " + JSON.stringify(c.after)).join("; ");
  }
  const rest = Object.entries(d).filter(([k]) => k !== "changes");
  return rest.map(([k, v]) => k + "=" + JSON.stringify(v)).join(" ");
}

function eventsTable(events, withJob) {
  const rows = events.map((e) => h("tr", { "data-event": e.id },
    h("td", { class: "num" }, e.id),
    h("td", {}, when(e.createdAt)),
    h("td", {}, e.actor, e.role ? h("span", { class: "muted" }, " (" + e.role + ")") : null),
    h("td", {}, e.kind),
    withJob ? h("td", {}, e.jobId == null ? "–" : h("a", { href: "#/jobs/" + e.jobId }, "job " + e.jobId)) : null,
    h("td", {}, e.runId == null ? "–" : "run " + e.runId),
    h("td", {}, h("span", { class: "event-details" }, describeEvent(e)))));
  const headers = ["Id", "When", "Who", "What", withJob ? "Job" : null, "Run", "Details"].filter((x) => x !== null);
  return h("table", { id: withJob ? "events-table" : "job-events-table" },
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, "No changes recorded."))));
}

async function deleteJob(job) {
  if (!confirm("Delete job " + job.name + " and its run history?")) return;
  try {
    await api("DELETE", "/jobs/" + job.id);
    flash("Deleted job " + job.name);
    location.hash = "#/jobs";
  } catch (err) { if (err.status !== 401) flash("Delete failed: " + err.message, true); }
}

// The edit form: PATCH with If-Match (the ETag of the read the form was filled from), so an edit
// made meanwhile by someone else is refused (412) instead of being overwritten.
function openEditor(view, job, etag) {
  editing = { id: job.id };
  const field = (label, input) => h("label", {}, label, input);
  const text = (name, value, attrs) => h("input", { name, value: value == null ? "" : String(value), ...(attrs || {}) });
  const form = h("form", { class: "create", id: "edit-job-form", onsubmit: async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const num = (name) => (f.get(name) === "" ? null : Number(f.get(name)));
    const body = {
      name: f.get("name"), handlerData: f.get("handlerData"), timezone: f.get("timezone") || "UTC",
      cronExpression: f.get("cronExpression") || null, queue: f.get("queue"),
      retryCount: num("retryCount"), retryBackoffSeconds: num("retryBackoffSeconds"), maxBackoffSeconds: num("maxBackoffSeconds"),
      timeoutSeconds: num("timeoutSeconds"), maxConcurrency: num("maxConcurrency"),
      tags: String(f.get("tags") || "").split(",").map((t) => t.trim()).filter(Boolean),
    };
    if (!body.cronExpression && job.runAt) delete body.cronExpression; // keep a one-time job's instant
    const params = String(f.get("parameters") || "").trim();
    try { body.parameters = params ? JSON.parse(params) : null; }
    catch (err) { flash("Edit failed: parameters: not valid JSON (" + err.message + ")", true); return; }
    try {
      const saved = await api("PATCH", "/jobs/" + job.id, body, { "If-Match": etag });
      editing = null;
      flash("Saved job " + saved.name + " (version " + saved.version + ")");
      render();
    } catch (err) {
      if (err.status === 412) flash("Not saved: the job was changed by someone else since you opened the form. Close the form to see the new version, then edit again.", true);
      else if (err.status !== 401) flash("Edit failed: " + err.message, true);
    }
  } },
    field("Name", text("name", job.name, { required: true })),
    field("Cron", text("cronExpression", job.cronExpression)),
    field("Time zone", text("timezone", job.timezone)),
    field(job.handlerType === "http" ? "URL" : "Function", text("handlerData", job.handlerData, { required: true })),
    field("Parameters (JSON)", h("textarea", { name: "parameters", rows: 2 }, job.parameters == null ? "" : JSON.stringify(job.parameters))),
    field("Retries", text("retryCount", job.retryCount, { type: "number", min: 0 })),
    field("Backoff (s)", text("retryBackoffSeconds", job.retryBackoffSeconds, { type: "number", min: 0 })),
    field("Max backoff (s)", text("maxBackoffSeconds", job.maxBackoffSeconds, { type: "number", min: 0 })),
    field("Timeout (s)", text("timeoutSeconds", job.timeoutSeconds, { type: "number", min: 0, step: "any" })),
    field("Queue", text("queue", job.queue)),
    field("Tags (comma-separated)", text("tags", (job.tags || []).join(", "))),
    field("Max concurrency (empty: unlimited)", text("maxConcurrency", job.maxConcurrency, { type: "number", min: 1 })),
    h("div", {},
      h("button", { type: "submit", class: "primary" }, "Save"), " ",
      h("button", { type: "button", onclick: () => { editing = null; render(); } }, "Close")));
  const slot = view.querySelector("#editor") || document.getElementById("editor");
  slot.replaceChildren(h("h2", {}, "Edit (version " + job.version + ")"), form);
}

function backfillForm(job) {
  const form = h("form", { class: "create", id: "backfill-form", onsubmit: async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    try {
      const result = await api("POST", "/jobs/" + job.id + "/backfill", { start: f.get("start"), end: f.get("end") });
      flash("Backfill of " + job.name + ": " + result.fires + " fires, " + result.skippedExisting + " already existed");
      form.reset();
      render();
    } catch (err) { if (err.status !== 401) flash("Backfill failed: " + err.message, true); }
  } },
    h("label", {}, "From (ISO 8601, inclusive)", h("input", { name: "start", required: true, placeholder: "2026-11-01T00:00:00Z" })),
    h("label", {}, "To (exclusive, not after now)", h("input", { name: "end", required: true, placeholder: "2026-11-02T00:00:00Z" })),
    h("div", {}, h("button", { type: "submit" }, "Backfill")));
  return h("details", { class: "backfill" }, h("summary", {}, "Backfill a past range"), form);
}

function runsTable(runs, dlq) {
  const rows = runs.map((r) => h("tr", { "data-run": r.id },
    h("td", { class: "num" }, r.id),
    dlq ? h("td", {}, h("a", { href: "#/jobs/" + r.jobId }, "job " + r.jobId)) : null,
    h("td", { class: "num" }, r.attempt),
    h("td", {}, badge(r.status)),
    h("td", { class: "num http-status" }, r.httpStatus == null ? "–" : String(r.httpStatus)),
    h("td", {}, r.trigger),
    h("td", {}, when(r.scheduledFor)),
    h("td", {}, when(r.startedAt), r.finishedAt ? h("div", { class: "muted" }, "took " + ((Date.parse(r.finishedAt) - Date.parse(r.startedAt || r.finishedAt)) / 1000).toFixed(3) + " s") : null),
    h("td", {}, r.workerId || "–"),
    h("td", {}, r.output ? h("pre", { class: "output" }, r.output) : h("span", { class: "muted" }, "–")),
    h("td", {}, r.error ? h("pre", { class: "error" }, r.error) : h("span", { class: "muted" }, "–")),
    dlq ? h("td", {}, h("button", { type: "button", class: "primary", disabled: !isAdmin(), onclick: () => act("Replay", async () => {
      const run = await api("POST", "/dlq/" + r.id + "/replay");
      return "Replayed run " + r.id + " as run " + run.id;
    }) }, "Replay")) : null));
  const headers = ["Run", dlq ? "Job" : null, "Attempt", "Status", "HTTP", "Trigger", "Scheduled for", "Started", "Worker", "Output", "Error", dlq ? "" : null].filter((x) => x !== null);
  return h("table", { id: dlq ? "dlq-table" : "runs-table" },
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, dlq ? "The dead-letter queue is empty." : "No runs yet."))));
}

function createForm() {
  if (!isAdmin()) return [h("p", { class: "muted" }, "A viewer token can read only; log in as admin to create jobs.")];
  const field = (label, input) => h("label", {}, label, input);
  const form = h("form", { class: "create", id: "create-job", onsubmit: async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const body = {
      name: f.get("name"), handlerType: f.get("handlerType"), handlerData: f.get("handlerData"),
      retryCount: Number(f.get("retryCount") || 0), retryBackoffSeconds: Number(f.get("retryBackoffSeconds") || 10),
    };
    if (f.get("cronExpression")) body.cronExpression = f.get("cronExpression");
    try {
      const job = await api("POST", "/jobs", body);
      flash("Created job " + job.name + " (id " + job.id + ")");
      form.reset();
      render();
    } catch (err) { if (err.status !== 401) flash("Create failed: " + err.message, true); }
  } },
    field("Name", h("input", { name: "name", required: true, placeholder: "nightly-report" })),
    field("Cron (empty: on demand)", h("input", { name: "cronExpression", placeholder: "0 */1 * * * *" })),
    field("Handler", h("select", { name: "handlerType" }, h("option", { value: "http" }, "http"), h("option", { value: "python" }, "python"))),
    field("URL or function", h("input", { name: "handlerData", required: true, placeholder: "https://example.com/hook" })),
    field("Retries", h("input", { name: "retryCount", type: "number", min: 0, value: 0 })),
    field("Backoff (s)", h("input", { name: "retryBackoffSeconds", type: "number", min: 0, value: 10 })),
    h("div", {}, h("button", { type: "submit", class: "primary" }, "Create job")));
  return [h("h2", {}, "New job"), form];
}

// ---- charts (inline SVG) ----
const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function axes(width, height, pad, maxY, minutes, unit) {
  const items = [];
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + (height - pad.t - pad.b) * (1 - i / 4);
    const value = maxY * i / 4;
    items.push(s("line", { x1: pad.l, x2: width - pad.r, y1: y, y2: y, stroke: "#eaecf0" }));
    items.push(s("text", { x: pad.l - 6, y: y + 4, "text-anchor": "end", "font-size": 11, fill: "#667085" }, (unit === "" || value >= 10 ? String(Math.round(value * 10) / 10) : value.toFixed(2)) + unit));
  }
  const n = minutes.length;
  for (let i = 0; i < n; i += 10) {
    const x = pad.l + (width - pad.l - pad.r) * (i + 0.5) / n;
    const d = new Date(minutes[i] * 60000);
    items.push(s("text", { x, y: height - pad.b + 16, "text-anchor": "middle", "font-size": 11, fill: "#667085" }, d.toISOString().slice(11, 16)));
  }
  return items;
}

function runsChart(t) {
  const width = 1000, height = 240, pad = { l: 48, r: 10, t: 10, b: 24 };
  const n = t.minutes.length;
  const statuses = Object.keys(t.counts).sort();
  const totals = t.minutes.map((_, i) => statuses.reduce((sum, st) => sum + t.counts[st][i], 0));
  const maxY = Math.max(4, Math.ceil(Math.max(...totals) / 4) * 4); // whole numbers on the axis
  const bw = (width - pad.l - pad.r) / n;
  const bars = [];
  t.minutes.forEach((minute, i) => {
    let y0 = height - pad.b;
    for (const st of statuses) {
      const v = t.counts[st][i];
      if (!v) continue;
      const hgt = (height - pad.t - pad.b) * v / maxY;
      y0 -= hgt;
      bars.push(s("rect", { x: pad.l + i * bw + 1, y: y0, width: Math.max(1, bw - 2), height: hgt, fill: STATUS_COLORS[st] || "#98a2b3" },
        s("title", {}, new Date(minute * 60000).toISOString().slice(11, 16) + " " + st + ": " + v)));
    }
  });
  const total = totals.reduce((a, b) => a + b, 0);
  return [
    h("div", { class: "legend" }, statuses.map((st) => h("span", {}, h("i", { style: { background: STATUS_COLORS[st] || "#98a2b3" } }), st + " " + t.counts[st].reduce((a, b) => a + b, 0))),
      h("span", { class: "muted" }, total + " runs in " + n + " min")),
    s("svg", { viewBox: "0 0 " + width + " " + height, width: "100%", role: "img", "aria-label": "runs per minute" }, axes(width, height, pad, maxY, t.minutes, ""), bars),
  ];
}

function lagChart(t) {
  const width = 1000, height = 200, pad = { l: 56, r: 10, t: 10, b: 24 };
  const n = t.minutes.length;
  const values = t.lagMax.filter((v) => v !== null);
  const maxY = Math.max(0.1, ...values);
  const x = (i) => pad.l + (width - pad.l - pad.r) * (i + 0.5) / n;
  const y = (v) => pad.t + (height - pad.t - pad.b) * (1 - v / maxY);
  const line = (series, color) => {
    const pts = series.map((v, i) => (v === null ? null : x(i).toFixed(1) + "," + y(v).toFixed(1))).filter(Boolean);
    const dots = series.map((v, i) => (v === null ? null : s("circle", { cx: x(i), cy: y(v), r: 2.5, fill: color }, s("title", {}, v.toFixed(3) + " s"))));
    return [pts.length > 1 ? s("polyline", { points: pts.join(" "), fill: "none", stroke: color, "stroke-width": 1.5 }) : null, dots];
  };
  return [
    h("div", { class: "legend" }, h("span", {}, h("i", { style: { background: "#2e90fa" } }), "average"), h("span", {}, h("i", { style: { background: "#f04438" } }), "max"),
      values.length ? null : h("span", { class: "muted" }, "no first attempts started in this hour")),
    s("svg", { viewBox: "0 0 " + width + " " + height, width: "100%", role: "img", "aria-label": "scheduling lag" },
      axes(width, height, pad, maxY, t.minutes, " s"), line(t.lagMax, "#f04438"), line(t.lagAvg, "#2e90fa")),
  ];
}

// ---- routing ----
function showLogin(message) {
  clearInterval(timer);
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("view").hidden = true;
  document.getElementById("login").hidden = false;
  const err = document.getElementById("login-error");
  err.textContent = message || "";
  err.hidden = !message;
}

let rendering = false;
// A render the user asked for (a filter or a page changed) while another was loading.
let forcedPending = false;

// ``force``: the user changed a filter or a page, so the view is swapped even though the focus
// is still in a filter control (Tab from one filter lands on the next).
async function render(force = false) {
  if (!token()) { showLogin(); return; }
  if (editing) return;
  if (rendering) { forcedPending = forcedPending || force; return; }
  rendering = true;
  const [, name, arg] = (location.hash || "#/jobs").split("/");
  const viewName = name === "jobs" && arg ? "job" : (views[name] ? name : "jobs");
  document.getElementById("login").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  document.getElementById("who").textContent = "role: " + role();
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === (viewName === "job" ? "jobs" : viewName));
  const view = document.getElementById("view");
  view.hidden = false;
  const staging = document.createElement("div");
  try {
    await views[viewName](staging, arg);
    // Keep a half-typed form across refreshes: only swap the view when nobody is typing in it.
    const typing = view.contains(document.activeElement) && document.activeElement.matches("input, select, textarea");
    // An edit form opened while this render was loading stays too.
    if ((force || !typing) && !editing) view.replaceChildren(...staging.childNodes);
  } catch (e) {
    if (e.status !== 401) view.replaceChildren(h("p", { class: "error" }, "Could not load: " + e.message));
  } finally {
    rendering = false;
  }
  if (forcedPending) { forcedPending = false; render(true); }
}

function start() {
  clearInterval(timer);
  render();
  timer = setInterval(render, REFRESH_MS);
}

document.getElementById("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const value = document.getElementById("token").value.trim().replace(/^Bearer\s+/i, "");
  sessionStorage.setItem(TOKEN_KEY, value);
  try {
    await api("GET", "/cluster");
    document.getElementById("token").value = "";
    start();
  } catch (err) {
    if (err.status !== 401) showLogin("Could not reach the API: " + err.message);
  }
});
document.getElementById("logout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); showLogin(); });
window.addEventListener("hashchange", () => { if (token()) { editing = null; jobsCursor = location.hash.startsWith("#/jobs") ? jobsCursor : [0]; render(); } });
if (token()) start(); else showLogin();
