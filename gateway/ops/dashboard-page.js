// Live pool dashboard (SPEC 9). Plain browser JavaScript, no build step: calls Login and
// mygateway.admin.v1.AdminService with the Connect protocol (POST /<service>/<method>, JSON).
// Every value from the server is rendered with textContent, never as HTML.
// biome-ignore lint/suspicious/noRedundantUseStrict: loaded as a classic <script>, where the directive matters
"use strict";

const admin = "mygateway.admin.v1.AdminService";
const tokenKey = "mygateway-dashboard-token";
const pollMs = 1000;

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(tokenKey);
let timer;

class RpcError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

async function call(service, method, body, auth = true) {
  const headers = {
    "content-type": "application/json",
    "connect-protocol-version": "1",
  };
  if (auth && token) headers.authorization = token;
  const res = await fetch(`/${service}/${method}`, {
    method: "POST",
    headers,
    body: JSON.stringify(body ?? {}),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new RpcError(data.code ?? "unknown", data.message ?? `HTTP ${res.status}`);
  return data;
}

function status(text) {
  $("status").textContent = text ?? "";
}

function el(tag, text, className) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (className) e.className = className;
  return e;
}

function duration(ms) {
  if (!Number.isFinite(ms)) return "–";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

const since = (ts) => (ts ? Date.now() - Date.parse(ts) : NaN);
const until = (ts) => (ts ? Date.parse(ts) - Date.now() : NaN);

function showApp(loggedIn) {
  $("login-section").hidden = loggedIn;
  $("app").hidden = !loggedIn;
  $("logout").hidden = !loggedIn;
  if (!loggedIn) $("who").textContent = "";
}

function logout(message) {
  token = null;
  sessionStorage.removeItem(tokenKey);
  clearTimeout(timer);
  showApp(false);
  status(message);
}

async function login(event) {
  event.preventDefault();
  status("");
  const username = $("username").value;
  const password = $("password").value;
  const sessionId = `dashboard-${crypto.randomUUID()}`;
  try {
    const reply = await call("my_service.MyServiceAPI", "Login", { username, password, sessionId }, false);
    if (reply.role !== "admin") {
      status(`user ${username} has role ${reply.role}; the dashboard needs role admin`);
      return;
    }
    token = reply.token;
    sessionStorage.setItem(tokenKey, token);
    $("password").value = "";
    $("who").textContent = username;
    start();
  } catch (error) {
    status(`login failed: ${error.message}`);
  }
}

async function act(what, fn) {
  try {
    await fn();
    status("");
    await refresh();
  } catch (error) {
    status(`${what} failed: ${error.message}`);
  }
}

function renderStats(instances, sessions, stats) {
  const healthy = instances.filter((i) => i.healthy).length;
  $("stat-instances").textContent = `${healthy} / ${instances.length}`;
  $("stat-sessions").textContent = String(sessions.length);
  // Last-minute counts come from the gateway: a page opened just now shows what happened before.
  const acquired = Number(stats.allocationsAcquired ?? 0);
  const busy = Number(stats.allocationsBusy ?? 0);
  $("stat-alloc-rate").textContent = String(Number(stats.allocationsAcquiredLastMinute ?? 0));
  $("stat-busy").textContent = `${busy}; ${Number(stats.allocationsBusyLastMinute ?? 0)}`;
  $("stat-allocated").textContent = String(acquired);
  $("stat-uptime").textContent = duration(since(stats.startTime));
}

function renderInstances(instances) {
  const body = $("instances").tBodies[0];
  body.replaceChildren(
    ...instances.map((i) => {
      const tr = el("tr");
      tr.dataset.address = i.address;
      tr.dataset.state = (i.state ?? "INSTANCE_STATE_UNSPECIFIED").replace("INSTANCE_STATE_", "");
      tr.dataset.session = i.sessionId ?? "";
      tr.append(el("td", i.podName || "?", "mono pod"), el("td", i.address, "mono"));
      const state = el("td");
      state.append(el("span", tr.dataset.state, `state state-${tr.dataset.state}`));
      if (i.draining) state.append(el("span", "draining", "drain"));
      tr.append(state, el("td", i.sessionId ?? "", "mono session"), el("td", duration(since(i.since))));
      tr.append(el("td", i.consecutiveFailures ? `${i.consecutiveFailures} failed: ${i.lastError ?? ""}` : "ok"));
      const actions = el("td");
      const button = el("button", i.draining ? "Undrain" : "Drain");
      button.className = "drain-button";
      button.addEventListener("click", () =>
        act(i.draining ? "undrain" : "drain", () =>
          call(admin, i.draining ? "UndrainInstance" : "DrainInstance", {
            instance: i.address,
          }),
        ),
      );
      actions.append(button);
      tr.append(actions);
      return tr;
    }),
  );
}

function renderSessions(sessions) {
  const body = $("sessions").tBodies[0];
  $("no-sessions").hidden = sessions.length > 0;
  body.replaceChildren(
    ...sessions.map((s) => {
      const tr = el("tr");
      tr.dataset.session = s.sessionId;
      tr.append(el("td", s.sessionId, "mono session"), el("td", s.owner), el("td", s.podName, "mono pod"));
      tr.append(el("td", duration(since(s.createTime)), "age"), el("td", `${duration(since(s.lastActivityTime))} ago`));
      tr.append(el("td", duration(until(s.expireTime))));
      const actions = el("td");
      const button = el("button", "Release", "danger release-button");
      button.addEventListener("click", () => act("release", () => call(admin, "ReleaseSession", { sessionId: s.sessionId })));
      actions.append(button);
      tr.append(actions);
      return tr;
    }),
  );
}

/** A protobuf JSON Duration ("1.500s") in milliseconds; NaN when absent. */
const durationMs = (d) => (typeof d === "string" && d.endsWith("s") ? Number(d.slice(0, -1)) * 1000 : NaN);

function shortDuration(ms) {
  if (!Number.isFinite(ms)) return "–";
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)}s` : duration(ms);
}

function renderQueue(queue) {
  const entries = queue.entries ?? [];
  $("stat-queue").textContent = String(queue.length ?? 0);
  $("stat-queue-estimate").textContent = shortDuration(durationMs(queue.estimatedWait));
  $("stat-queue-interval").textContent = shortDuration(durationMs(queue.meanGrantInterval));
  $("no-queue").hidden = entries.length > 0;
  $("queue").tBodies[0].replaceChildren(
    ...entries.map((e) => {
      const tr = el("tr");
      tr.dataset.session = e.sessionId;
      tr.dataset.position = String(e.position ?? 0);
      tr.append(el("td", e.position ? String(e.position) : "–", "position"), el("td", e.sessionId, "mono session"));
      tr.append(el("td", e.owner), el("td", e.gatewayId, "mono"), el("td", duration(since(e.enqueueTime))));
      tr.append(el("td", duration(until(e.deadlineTime))), el("td", e.grantedInstance ?? "", "mono"));
      return tr;
    }),
  );
}

async function refresh() {
  const [i, s, stats, queue] = await Promise.all([
    call(admin, "ListInstances", {}),
    call(admin, "ListSessions", {}),
    call(admin, "GetPoolStats", {}),
    call(admin, "ListQueue", {}),
  ]);
  const instances = i.instances ?? [];
  const sessions = s.sessions ?? [];
  renderStats(instances, sessions, stats);
  renderInstances(instances);
  renderSessions(sessions);
  renderQueue(queue);
  $("updated").textContent = new Date().toLocaleTimeString();
}

async function poll() {
  try {
    await refresh();
    if (!$("status").textContent.includes("failed")) status("");
  } catch (error) {
    if (error.code === "unauthenticated") return logout("session expired: log in again");
    if (error.code === "permission_denied") return logout(error.message);
    status(`refresh failed: ${error.message}`);
  }
  timer = setTimeout(poll, pollMs);
}

function start() {
  showApp(true);
  clearTimeout(timer);
  void poll();
}

$("login-form").addEventListener("submit", login);
$("logout").addEventListener("click", () => logout(""));
if (token) start();
else showApp(false);
