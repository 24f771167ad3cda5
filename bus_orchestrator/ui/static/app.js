// The saga dashboard: plain JavaScript over the HTTP API, with the bearer token the login
// form took (kept in this tab's session storage). Every value shown comes from messages and
// is put into the page as text, never as markup.

const TOKEN_KEY = "bus-orchestrator.token";
const main = document.getElementById("main");
let me = null; // {name, role} of the token
let refresh = null; // the current page's live refresh, stopped on leaving it

// -- DOM ------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function link(path, text) {
  return h("a", { href: path, dataset: { nav: "" } }, text);
}

function status(value) {
  return h("span", { class: `status ${value}` }, value);
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function took(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 120000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 7200000) return `${Math.round(ms / 60000)} min`;
  return `${(ms / 3600000).toFixed(1)} h`;
}

function show(...nodes) {
  main.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined && n !== false));
}

function notice(text, kind = "") {
  return h("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

// -- the API --------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(describe(status, body));
    this.status = status;
    this.body = body;
  }
}

function describe(status, body) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) return body.detail.map((e) => e.msg).join("; ");
  return `HTTP ${status}`;
}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options = { ...options, body: JSON.stringify(options.json) };
  }
  const response = await fetch(path, { ...options, headers });
  const body = response.headers.get("content-type")?.includes("json")
    ? await response.json()
    : null;
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    me = null;
    login("The token was refused: sign in again.");
    throw new ApiError(401, body);
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// -- routing --------------------------------------------------------------------------

const routes = [
  [/^\/ui\/?$/, overview],
  [/^\/ui\/sagas\/?$/, sagaList],
  [/^\/ui\/sagas\/(.+)$/, sagaPage],
  [/^\/ui\/dead\/?$/, deadLetters],
  [/^\/ui\/schedules\/?$/, schedulesAndLocks],
];

function go(path) {
  history.pushState(null, "", path);
  render();
}

async function render() {
  if (refresh) clearInterval(refresh);
  refresh = null;
  if (!sessionStorage.getItem(TOKEN_KEY)) return login();
  if (!me) {
    try {
      me = await api("/me");
    } catch {
      return;
    }
    document.getElementById("who").textContent = `${me.name} (${me.role})`;
  }
  const path = decodeURI(location.pathname);
  for (const a of document.querySelectorAll("header nav a")) {
    const target = a.getAttribute("href");
    const current = target === "/ui" ? path === "/ui" || path === "/ui/" : path.startsWith(target);
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const [pattern, page] of routes) {
    const match = pattern.exec(path);
    if (match) {
      try {
        await page(...match.slice(1));
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 401)) {
          show(h("h1", {}, "Something went wrong"), notice(error.message, "error"));
        }
      }
      main.focus({ preventScroll: true });
      return;
    }
  }
  show(h("h1", {}, "Not found"), h("p", {}, link("/ui", "Back to the overview")));
}

document.addEventListener("click", (event) => {
  const a = event.target.closest("a[data-nav]");
  if (!a || event.ctrlKey || event.metaKey || event.shiftKey) return;
  event.preventDefault();
  go(a.getAttribute("href"));
});
window.addEventListener("popstate", render);
document.getElementById("search").addEventListener("submit", (event) => {
  event.preventDefault();
  const q = event.target.q.value.trim();
  if (q) go(`/ui/sagas/${encodeURIComponent(q)}`);
});

// -- login ----------------------------------------------------------------------------

function login(message = "") {
  document.getElementById("who").textContent = "";
  const form = h(
    "form",
    { class: "login", onsubmit: signIn },
    h("h1", {}, "Sign in"),
    message ? notice(message, "error") : null,
    h("label", { for: "token" }, "API token (BUS_API_TOKENS)"),
    h("input", { id: "token", name: "token", type: "password", required: true, autocomplete: "off" }),
    h("button", { type: "submit" }, "Sign in"),
    h("p", { class: "muted" }, "The token stays in this browser tab, and is forgotten when it closes."),
  );
  show(form);
  form.token.focus();
}

async function signIn(event) {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, event.target.token.value.trim());
  me = null;
  await render();
}

// -- overview -------------------------------------------------------------------------

async function overview() {
  const draw = async () => {
    const [stats, dead] = await Promise.all([api("/stats"), optional("/dead?limit=500")]);
    const totals = {};
    const byType = {};
    for (const c of stats.counts) {
      totals[c.status] = (totals[c.status] || 0) + c.count;
      (byType[c.saga_type] ||= {})[c.status] = c.count;
    }
    const statuses = ["running", "suspended", "compensating", "completed", "compensated", "failed"];
    const cards = statuses.map((s) =>
      h(
        "a",
        { class: "card", href: `/ui/sagas?status=${s}`, dataset: { nav: "" } },
        h("div", { class: "big" }, totals[s] || 0),
        h("div", { class: "label" }, s),
      ),
    );
    if (dead) {
      const count = dead.items.length + (dead.next ? "+" : "");
      cards.push(
        h(
          "a",
          { class: "card", href: "/ui/dead", dataset: { nav: "" } },
          h("div", { class: "big" }, count),
          h("div", { class: "label" }, "dead letters"),
        ),
      );
    }
    show(
      h("h1", {}, "Overview"),
      h("div", { class: "cards" }, cards),
      h("h2", {}, "By saga type"),
      table(
        ["type", ...statuses],
        Object.entries(byType).map(([type, counts]) => [
          link(`/ui/sagas?type=${encodeURIComponent(type)}`, type),
          ...statuses.map((s) => counts[s] || 0),
        ]),
        { numeric: statuses.map((_, i) => i + 1) },
      ),
      h("h2", {}, "Oldest unfinished sagas"),
      stats.oldest_running.length
        ? table(
            ["type", "saga", "status", "since"],
            stats.oldest_running.map((o) => [
              o.saga_type,
              link(`/ui/sagas/${o.saga_id}`, o.correlation_id),
              status(o.status),
              when(o.created_at),
            ]),
          )
        : h("p", { class: "muted" }, "None: every saga has ended."),
      h("p", { class: "muted" }, `Refreshed ${when(new Date().toISOString())}, every 5 seconds.`),
    );
  };
  await draw();
  refresh = setInterval(() => draw().catch(() => {}), 5000);
}

async function optional(path) {
  try {
    return await api(path);
  } catch (error) {
    if (error instanceof ApiError && (error.status === 404 || error.status === 403)) return null;
    throw error;
  }
}

function table(headers, rows, { numeric = [] } = {}) {
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, headers.map((t, i) => h("th", { class: numeric.includes(i) ? "num" : null, scope: "col" }, t)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, row.map((cell, i) => h("td", { class: numeric.includes(i) ? "num" : null }, cell))))),
  );
}

// -- the saga list --------------------------------------------------------------------

const STATUSES = ["", "running", "suspended", "compensating", "completed", "compensated", "failed"];

async function sagaList() {
  const query = new URLSearchParams(location.search);
  const form = h(
    "form",
    { class: "filters", onsubmit: filter },
    field("Type", h("input", { name: "type", value: query.get("type") || "" })),
    field(
      "Status",
      h("select", { name: "status" }, STATUSES.map((s) => h("option", { value: s, selected: s === (query.get("status") || "") }, s || "any"))),
    ),
    field("Correlation id", h("input", { name: "correlation_id", value: query.get("correlation_id") || "" })),
    field("Created after", h("input", { name: "created_after", type: "datetime-local", value: local(query.get("created_after")) })),
    field("Created before", h("input", { name: "created_before", type: "datetime-local", value: local(query.get("created_before")) })),
    field("Stuck longer than (minutes)", h("input", { name: "stuck", type: "number", min: 1, value: query.get("stuck") || "" })),
    h("button", { type: "submit" }, "Filter"),
  );
  const params = new URLSearchParams();
  for (const key of ["type", "status", "correlation_id", "created_after", "created_before", "cursor"]) {
    if (query.get(key)) params.set(key, query.get(key));
  }
  if (query.get("stuck")) {
    const before = new Date(Date.now() - Number(query.get("stuck")) * 60000);
    params.set("updated_before", before.toISOString());
  }
  params.set("limit", "50");
  const page = await api(`/sagas?${params}`);
  const next = new URLSearchParams(query);
  if (page.next) next.set("cursor", page.next);
  show(
    h("h1", {}, "Sagas"),
    form,
    page.items.length
      ? table(
          ["saga", "type", "status", "created", "updated", "reason"],
          page.items.map((s) => [
            link(`/ui/sagas/${s.saga_id}`, s.correlation_id),
            s.saga_type,
            status(s.status),
            when(s.created_at),
            when(s.updated_at),
            s.failure || "",
          ]),
        )
      : h("p", { class: "muted" }, "No saga matches."),
    page.next ? link(`/ui/sagas?${next}`, "Next page") : null,
  );
}

function field(label, input) {
  return h("label", {}, label, input);
}

function local(iso) {
  return iso ? iso.replace(/Z$/, "").slice(0, 16) : "";
}

function filter(event) {
  event.preventDefault();
  const params = new URLSearchParams();
  for (const [key, value] of new FormData(event.target)) {
    if (!value) continue;
    params.set(key, key.startsWith("created_") ? new Date(`${value}Z`).toISOString() : value);
  }
  go(`/ui/sagas?${params}`);
}

// -- one saga -------------------------------------------------------------------------

async function sagaPage(ref) {
  const started = performance.now(); // to the page rendered: kept on <main> for tests
  const id = encodeURIComponent(ref);
  let saga;
  try {
    saga = await api(`/sagas/${id}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 409 && error.body.candidates) {
      return show(
        h("h1", {}, `Several sagas have correlation id ${ref}`),
        table(
          ["saga", "type", "status", "created"],
          error.body.candidates.map((c) => [link(`/ui/sagas/${c.saga_id}`, c.saga_id), c.saga_type, status(c.status), when(c.created_at)]),
        ),
      );
    }
    if (error instanceof ApiError && error.status === 404) {
      return show(h("h1", {}, "No such saga"), notice(error.message, "error"));
    }
    throw error;
  }
  const history = await api(`/sagas/${saga.saga_id}/history`);
  const compensations = new Set(saga.steps.map((s) => s.compensation_type).filter(Boolean));
  show(
    h("h1", {}, `${saga.saga_type} / ${saga.correlation_id} `, status(saga.status)),
    facts(saga),
    repairs(saga),
    h("h2", {}, "Timeline"),
    timeline(history.entries, compensations),
    h("h2", {}, "Steps"),
    steps(saga),
    h("h2", {}, "Data"),
    saga.data ? h("pre", {}, JSON.stringify(saga.data, null, 2)) : h("p", { class: "muted" }, "Not shown: this app does not define the saga type."),
  );
  main.dataset.renderedMs = String(Math.round(performance.now() - started));
}

function facts(saga) {
  const rows = [
    ["saga id", h("span", { class: "mono" }, saga.saga_id)],
    ["created", when(saga.created_at)],
    ["updated", when(saga.updated_at)],
    ["version", `${saga.version} (definition ${saga.definition_version})`],
  ];
  if (saga.failure) rows.push(["reason", saga.failure]);
  if (saga.awaiting && saga.awaiting.kind !== "nothing") rows.push(["waits for", awaiting(saga.awaiting)]);
  if (saga.locks && saga.locks.keys.length) rows.push(["locks", saga.locks.keys.join(", ") + (saga.locks.waiting ? " (waiting)" : "")]);
  if (saga.jaeger_url) rows.push(["trace", h("a", { href: saga.jaeger_url, target: "_blank", rel: "noopener" }, "open in Jaeger")]);
  else if (saga.trace_id) rows.push(["trace", h("span", { class: "mono" }, saga.trace_id)]);
  return h("dl", { class: "facts" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function awaiting(a) {
  if (a.kind === "locks") return "its entity locks";
  if (a.kind === "operator") return `an operator: ${a.items.map((i) => i.step).join(", ")} holds it`;
  return a.items.map((i) => `${i.step}: ${i.kind} ${i.message_type || ""}${i.until ? ` until ${when(i.until)}` : ""}`).join("; ");
}

const REPAIR_HELP = {
  retry: "Send again what the saga waits for.",
  skip: "Mark the stuck step done by hand, with the reply it should have had.",
  abort: "Stop the saga and compensate what it did.",
  resume: "Compensate the failed saga now that the cause is fixed.",
};

function repairs(saga) {
  if (!me || me.role !== "operator" || !saga.repairs.length) return null;
  const box = h("div", { class: "repairs", role: "group", "aria-label": "Repairs" });
  for (const repair of saga.repairs) {
    box.append(
      h("button", { type: "button", class: repair === "abort" ? "danger" : "secondary", title: REPAIR_HELP[repair], onclick: () => askRepair(saga, repair) }, repair),
    );
  }
  return box;
}

function askRepair(saga, repair) {
  const dialog = h(
    "dialog",
    { "aria-labelledby": "repair-title" },
    h(
      "form",
      { method: "dialog" },
      h("h2", { id: "repair-title" }, `${repair}: ${saga.saga_type} / ${saga.correlation_id}`),
      h("p", {}, REPAIR_HELP[repair]),
      h("label", { for: "repair-reason" }, "Reason (recorded in the saga's history)"),
      h("textarea", { id: "repair-reason", name: "reason", rows: 2, required: true }),
      repair === "skip" ? [h("label", { for: "repair-data" }, "Reply data (JSON)"), h("textarea", { id: "repair-data", name: "data", rows: 5, class: "mono" }, "{}")] : null,
      h("div", { class: "outcome", "aria-live": "polite" }),
      h(
        "div",
        { class: "buttons" },
        h("button", { type: "button", class: "secondary", onclick: () => dialog.close() }, "Cancel"),
        h("button", { type: "submit", value: "go" }, repair),
      ),
    ),
  );
  const form = dialog.querySelector("form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const outcome = form.querySelector(".outcome");
    const body = { reason: form.reason.value.trim() };
    if (!body.reason) return outcome.replaceChildren(notice("Say why: the reason is recorded.", "error"));
    if (form.data) {
      try {
        body.data = JSON.parse(form.data.value || "{}");
      } catch (error) {
        return outcome.replaceChildren(notice(`The data is not JSON: ${error.message}`, "error"));
      }
    }
    try {
      const result = await api(`/sagas/${saga.saga_id}/${repair}`, { method: "POST", json: body });
      dialog.close();
      await sagaPage(saga.saga_id);
      main.prepend(notice(`${repair}: ${result.note}. The saga is ${result.saga.status}.`, "ok"));
    } catch (error) {
      outcome.replaceChildren(notice(`${repair} refused: ${error.message}`, "error"));
    }
  });
  document.body.append(dialog);
  dialog.addEventListener("close", () => dialog.remove());
  dialog.showModal();
}

// a history entry that tells of a failure: a failure reply, a timeout, a refusal
const FAILURE = /fail|timed? ?out|timeout|refused|rejected|declined|cancel/i;

function timeline(entries, compensations) {
  const first = entries.length ? Date.parse(entries[0].at) : 0;
  let previous = first;
  return h(
    "ol",
    { class: "timeline" },
    entries.map((e) => {
      const at = Date.parse(e.at);
      const classes = [];
      const operator = e.message_type.startsWith("bus.operator.");
      if (operator) classes.push("operator");
      else if (compensations.has(e.message_type)) classes.push("compensation");
      else if (FAILURE.test(`${e.note} ${e.message_type}`)) classes.push("failure");
      const item = h(
        "li",
        { class: classes.join(" ") },
        h("span", { class: "when" }, when(e.at)),
        h("span", { class: "took" }, at > previous ? `+${took(at - previous)}` : ""),
        " ",
        e.direction === "in" ? "← " : "→ ",
        h("span", { class: "kind" }, label(e)),
        e.note ? h("div", {}, e.note) : null,
        h("details", {}, h("summary", {}, "message"), h("pre", {}, JSON.stringify({ id: e.message_id, causation_id: e.causation_id, trace_id: e.trace_id, outcome: e.outcome, payload: e.payload }, null, 2))),
      );
      previous = at;
      return item;
    }),
  );
}

function label(entry) {
  if (entry.message_type.startsWith("bus.operator.")) {
    const p = entry.payload || {};
    return `${entry.message_type.slice(13)} by ${p.by}: ${p.reason}`;
  }
  if (entry.message_type === "bus.saga_timer_fired") return "timeout";
  return entry.message_type;
}

function steps(saga) {
  return table(
    ["step", "status", "attempts", "started", "took", "error"],
    saga.steps.map((s) => [
      s.group ? `${s.group}: ${s.name}` : s.name,
      status(s.status),
      `${s.attempts}${s.tries > 1 ? ` (try ${s.tries})` : ""}`,
      when(s.started_at),
      s.finished_at ? took(Date.parse(s.finished_at) - Date.parse(s.started_at)) : "",
      s.error || "",
    ]),
  );
}

// -- dead letters, schedules and locks ------------------------------------------------

async function deadLetters() {
  const page = await optional("/dead?limit=100");
  if (!page) return show(h("h1", {}, "Dead letters"), h("p", { class: "muted" }, "This API serves no dead letters."));
  show(
    h("h1", {}, "Dead letters"),
    page.items.length
      ? table(
          ["when", "type", "reason", "detail", "saga"],
          page.items.map((d) => [when(d.dead_lettered_at), d.message_type || "", d.reason, d.detail, d.saga_id ? link(`/ui/sagas/${d.saga_id}`, "saga") : ""]),
        )
      : h("p", { class: "muted" }, "None."),
  );
}

async function schedulesAndLocks() {
  const schedules = await optional("/schedules");
  show(
    h("h1", {}, "Schedules"),
    schedules && schedules.items && schedules.items.length
      ? table(
          ["schedule", "cron", "time zone", "next", "last"],
          schedules.items.map((s) => [s.name, h("code", {}, s.cron), s.timezone, when(s.next_firing), s.last_firing ? when(s.last_firing.slot) : "never"]),
        )
      : h("p", { class: "muted" }, "No schedules."),
  );
}

render();
