// Operations dashboard: sign in with an admin token, then follow GET /v1/ops/events (one
// snapshot a second, read with fetch so the token travels in a header, never in the URL).
// No build step, no dependencies; everything is rendered with DOM calls (no innerHTML of data).

const TOKEN_KEY = "chat.ops.token";
const HISTORY = 120; // samples kept per sparkline (two minutes at one a second)
const STALE_MS = 5000; // no snapshot for this long: say so
const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  abort: null,
  lastAt: 0,
  previous: null, // the previous snapshot's stats (rates are differences)
  rate: [], // this node's messages/s
  rooms: new Map(), // channel → its table row, its cells and its rate samples
  settings: [], // declarations from GET /v1/ops/config
  values: {}, // the values the form started from
  retry: 500,
};

// API

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error && body.error.code;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// Sign-in

function showLogin(message = "") {
  $("dash-view").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message;
}

async function signIn(token) {
  state.token = token;
  try {
    const config = await api("GET", "/v1/ops/config"); // proves the token is an admin's
    sessionStorage.setItem(TOKEN_KEY, token);
    $("login-view").hidden = true;
    $("dash-view").hidden = false;
    renderSettings(config);
    follow();
  } catch (error) {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(error.status === 403 ? "That token has no admin role." : error.status === 401 ? "That token is not valid here." : error.message);
  }
}

function signOut(message = "") {
  if (state.abort) state.abort.abort();
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin(message);
}

// The live feed

async function follow() {
  while (state.token) {
    const controller = new AbortController();
    state.abort = controller;
    try {
      const response = await fetch("/v1/ops/events", { headers: { Authorization: `Bearer ${state.token}` }, signal: controller.signal });
      if (response.status === 401 || response.status === 403) {
        signOut("Your session ended: sign in again.");
        return;
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      state.retry = 500;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          onEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
      setLive("down", "Disconnected — retrying…");
      await new Promise((resolve) => setTimeout(resolve, state.retry));
      state.retry = Math.min(state.retry * 2, 10000);
    }
  }
}

function onEvent(chunk) {
  let kind = "message";
  let data = "";
  for (const line of chunk.split("\n")) {
    if (line.startsWith("event:")) kind = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (kind !== "snapshot" || !data) return;
  render(JSON.parse(data));
}

function setLive(kind, label) {
  $("live").dataset.state = kind;
  $("live-label").textContent = label;
}

setInterval(() => {
  if (state.token && state.lastAt && Date.now() - state.lastAt > STALE_MS) setLive("stale", `No update for ${Math.round((Date.now() - state.lastAt) / 1000)} s`);
}, 1000);

// Rendering

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

// The samples across the whole width (up to HISTORY of them: the last two minutes), scaled to their maximum.
function sparkPoints(samples) {
  if (samples.length < 2) return "";
  const max = Math.max(1, ...samples);
  const step = 120 / (samples.length - 1);
  return samples.map((v, i) => `${(i * step).toFixed(1)},${(27 - (v / max) * 25).toFixed(1)}`).join(" ");
}

function sparkline(samples, label) {
  const node = svg("svg", { class: "spark", viewBox: "0 0 120 28", preserveAspectRatio: "none", role: "img", "aria-label": label });
  node.append(svg("polyline", { points: sparkPoints(samples) }));
  return node;
}

function push(samples, value) {
  samples.push(value);
  if (samples.length > HISTORY) samples.shift();
}

const number = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const fmt = (value) => (value === null || value === undefined ? "–" : number.format(value));

function ago(ms) {
  if (!ms) return "–";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function render(snap) {
  state.lastAt = Date.now();
  setLive("live", "Live");
  $("via-node").textContent = `via ${snap.node_id}`;
  renderSummary(snap);
  renderNodes(snap.cluster);
  renderRooms(snap.rooms);
  renderBreakers(snap.breakers);
  refreshSettings(snap.config);
}

function renderSummary(snap) {
  const nodes = snap.cluster.nodes;
  const draining = nodes.filter((n) => n.draining).length;
  $("kpi-nodes").textContent = String(nodes.length);
  $("kpi-nodes-sub").textContent = draining ? `${draining} draining` : "none draining";
  const connections = nodes.reduce((sum, n) => sum + n.connections, 0);
  const capacity = nodes.reduce((sum, n) => sum + n.capacity, 0);
  $("kpi-connections").textContent = fmt(connections);
  $("kpi-connections-sub").textContent = capacity ? `${fmt((connections / capacity) * 100)} % of ${fmt(capacity)}` : "";
  const stats = snap.stats;
  const before = state.previous;
  if (before && snap.time > before.time) {
    const rate = ((stats.messages_stored - before.messages_stored) * 1000) / (snap.time - before.time);
    push(state.rate, Math.max(0, rate));
    $("kpi-rate").textContent = fmt(rate);
  }
  state.previous = { ...stats, time: snap.time };
  $("kpi-spark").querySelector("polyline").setAttribute("points", sparkPoints(state.rate));
  const self = snap.cluster.this_node;
  const health = $("kpi-health");
  health.textContent = self.ready ? "Ready" : "Not ready";
  health.className = `big ${self.ready ? "ok-text" : "bad-text"}`;
  health.dataset.ready = String(self.ready);
  const failing = Object.entries(self.failing).map(([part, why]) => `${part}: ${why}`);
  $("kpi-health-sub").textContent = failing.length ? failing.join("; ") : `loop lag ${fmt(stats.loop_lag_ms)} ms`;
  $("kpi-health-sub").className = failing.length ? "sub bad-text" : "sub muted";
}

function renderNodes(cluster) {
  const body = $("nodes-body");
  body.replaceChildren(
    ...cluster.nodes.map((n) => {
      const status = n.draining ? el("span", { class: "badge warn", text: "draining" }) : el("span", { class: "badge ok", text: "serving" });
      const health = n.this ? el("span", { class: `badge ${cluster.this_node.ready ? "ok" : "bad"}`, text: cluster.this_node.ready ? "ready" : "not ready" }) : null;
      const meter = el("meter", { min: 0, max: Math.max(1, n.capacity), value: n.connections, high: n.capacity * 0.8, optimum: 0, "aria-label": `${n.node_id}: ${n.connections} of ${n.capacity} connections` });
      return el(
        "tr",
        { "data-testid": "node-row", "data-node": n.node_id },
        el("td", { "data-label": "Node" }, el("span", {}, el("span", { class: "node-id", text: n.node_id }), n.this ? el("span", { class: "badge info", text: "this node" }) : null, el("span", { class: "node-url", text: n.url }))),
        el("td", { "data-label": "Connections" }, el("span", {}, el("span", { "data-testid": "node-connections", text: `${fmt(n.connections)} / ${fmt(n.capacity)}` }), meter)),
        el("td", { "data-label": "Status" }, el("span", {}, status, health)),
        el("td", { "data-label": "Version", text: n.version || "–" }),
        el("td", { "data-label": "Up since", title: n.started_at ? new Date(n.started_at).toISOString() : "", text: ago(n.started_at) }),
      );
    }),
  );
  $("nodes-count").textContent = `${cluster.nodes.length} node${cluster.nodes.length === 1 ? "" : "s"}`;
  $("view-age").textContent = cluster.view_age_s > 0 ? `This node's view of the cluster may be ${fmt(cluster.view_age_s)} s old (ZooKeeper unreachable).` : "";
}

// Rows are kept per room and updated in place (a button being clicked or focused survives the
// next snapshot); each room keeps two minutes of its send, fetch and join rates for sparklines.
const RATES = [["send_per_s", "Sends"], ["fetch_per_s", "Fetches"], ["join_per_s", "Joins"]];

function roomRow(channel) {
  const row = { tr: el("tr", { "data-testid": "room-row", "data-channel": channel }), samples: {}, rates: {}, sparks: {} };
  const cells = [el("td", { "data-label": "Room", class: "node-id", text: channel })];
  for (const [key, label] of RATES) {
    row.samples[key] = [];
    row.rates[key] = el("span", { "data-testid": `room-${key}` });
    row.sparks[key] = sparkline([], `${label} per second of room ${channel}, last two minutes`);
    cells.push(el("td", { "data-label": `${label}/s` }, el("span", { class: "rate" }, row.rates[key], row.sparks[key])));
  }
  row.members = el("td", { "data-label": "Members" });
  row.online = el("td", { "data-label": "Online" });
  row.badges = el("span", { "data-testid": "room-state" });
  row.since = el("td", { "data-label": "Hot since" });
  row.pins = pinControls(channel);
  cells.push(row.members, row.online, el("td", { "data-label": "State" }, row.badges), row.since, el("td", { "data-label": "Protection" }, row.pins.group));
  row.tr.append(...cells);
  return row;
}

function updateRoom(row, room) {
  row.tr.className = room.hot ? "hot" : "";
  row.tr.dataset.hot = String(Boolean(room.hot));
  row.tr.dataset.pinned = String(room.pinned);
  row.tr.dataset.throttled = String(Boolean(room.throttled));
  for (const [key] of RATES) {
    push(row.samples[key], room[key]);
    row.rates[key].textContent = fmt(room[key]);
    row.sparks[key].querySelector("polyline").setAttribute("points", sparkPoints(row.samples[key]));
  }
  row.members.textContent = fmt(room.members);
  row.online.textContent = room.online_sampled ? `≥ ${fmt(room.online)}` : fmt(room.online);
  const badges = [];
  if (room.hot) badges.push(el("span", { class: "badge bad", text: "hot" }));
  if (room.throttled) badges.push(el("span", { class: "badge warn", text: "throttled" }));
  if (room.pinned === true) badges.push(el("span", { class: "badge info", text: "pinned on" }));
  if (room.pinned === false) badges.push(el("span", { class: "badge info", text: "pinned off" }));
  if (!badges.length) badges.push(el("span", { class: "badge ok", text: "watched" }));
  row.badges.replaceChildren(...badges);
  row.since.textContent = ago(room.hot_since);
  row.since.title = room.hot_since ? new Date(room.hot_since).toISOString() : "";
  for (const [pin, button] of row.pins.buttons) button.setAttribute("aria-pressed", String(room.pinned === pin));
}

function renderRooms(rooms) {
  $("rooms-table").hidden = rooms.length === 0;
  $("rooms-empty").hidden = rooms.length > 0;
  const seen = new Set();
  const rows = rooms.map((room) => {
    seen.add(room.channel);
    let row = state.rooms.get(room.channel);
    if (!row) state.rooms.set(room.channel, (row = roomRow(room.channel)));
    updateRoom(row, room);
    return row.tr;
  });
  for (const channel of [...state.rooms.keys()]) if (!seen.has(channel)) state.rooms.delete(channel);
  const body = $("rooms-body");
  rows.forEach((tr, i) => {
    if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null); // hottest first, nodes kept
  });
  while (body.children.length > rows.length) body.lastElementChild.remove();
  $("rooms-count").textContent = `${rooms.filter((r) => r.hot).length} hot of ${rooms.length} watched`;
}

function pinControls(channel) {
  const group = el("span", { class: "pins", role: "group", "aria-label": `Protection of room ${channel}` });
  const buttons = [];
  for (const [pin, label, testid, title] of [
    [true, "Protect", "pin-on", "Protect this room on every node, whatever its rates"],
    [false, "Unprotect", "pin-off", "Never protect this room, whatever its rates"],
    [null, "Auto", "pin-release", "Release the pin: its rates decide again"],
  ]) {
    const button = el("button", { type: "button", "aria-pressed": "false", "data-testid": testid, title, text: label });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api("POST", `/v1/ops/rooms/${encodeURIComponent(channel)}/throttle`, { pin });
        setStatus($("rooms-status"), `Room ${channel}: ${pin === null ? "back to automatic" : pin ? "protected" : "unprotected"} on every node.`, true);
      } catch (error) {
        setStatus($("rooms-status"), `Could not change room ${channel}: ${error.message}`, false);
      } finally {
        button.disabled = false;
      }
    });
    buttons.push([pin, button]);
    group.append(button);
  }
  return { group, buttons };
}

function setStatus(node, text, ok) {
  node.textContent = text;
  node.className = `status ${ok ? "ok" : "bad"}`;
}

function renderBreakers(breakers) {
  $("breakers-none").hidden = breakers.length > 0;
  const tone = { healthy: "ok", caution: "warn", critical: "bad" };
  $("breakers-list").replaceChildren(
    ...breakers.map((b) =>
      el(
        "li",
        { "data-testid": "breaker", "data-state": b.state, title: `${fmt(b.refused)} requests refused at once since the node started` },
        el("span", { class: "node-id", text: `${b.name} ` }),
        el("span", { class: `badge ${tone[b.state] || "info"}`, text: b.state }),
        b.refused ? el("span", { class: "muted small", text: ` ${fmt(b.refused)} refused` }) : null,
      ),
    ),
  );
}

// Settings (dynamic config)

// Settings are grouped by the first word of their key (hot_, cassandra_ …); the first group (the
// hot-room thresholds) is open, the others fold, and a filter finds any key.
function settingInput(s, value) {
  const id = `setting-${s.key}`;
  const common = { id, name: s.key, "data-testid": id, "aria-describedby": `${id}-doc` };
  let input;
  if (s.type === "bool" || s.choices) {
    input = el("select", common, ...(s.choices || ["true", "false"]).map((c) => el("option", { value: c, text: c })));
  } else {
    input = el("input", {
      ...common,
      type: s.type === "str" ? "text" : "number",
      inputmode: s.type === "int" ? "numeric" : s.type === "float" ? "decimal" : undefined,
      step: s.type === "int" ? 1 : s.type === "float" ? "any" : undefined,
      min: s.minimum ?? undefined,
      max: s.maximum ?? undefined,
    });
  }
  input.value = String(value);
  input.addEventListener(input.tagName === "SELECT" ? "change" : "input", markChanged);
  return input;
}

function renderSettings(config) {
  state.settings = config.settings;
  state.values = { ...config.config };
  $("settings-empty").hidden = config.settings.length > 0;
  $("settings-form").hidden = config.settings.length === 0;
  const groups = new Map();
  for (const s of config.settings) {
    const name = s.key.split("_")[0];
    if (!groups.has(name)) groups.set(name, []);
    groups.get(name).push(s);
  }
  let first = true;
  $("settings-fields").replaceChildren(
    ...[...groups].map(([name, settings]) => {
      const fields = settings.map((s) => {
        const id = `setting-${s.key}`;
        const bounds = [s.minimum !== null ? `min ${s.minimum}` : "", s.maximum !== null ? `max ${s.maximum}` : "", `default ${s.default}`].filter(Boolean).join(", ");
        return el("div", { class: "field", "data-key": s.key }, el("label", { for: id, text: s.key }), settingInput(s, config.config[s.key]), el("span", { class: "doc", id: `${id}-doc`, text: `${s.doc} (${bounds})` }));
      });
      const group = el("details", { class: "group", "data-group": name, open: first }, el("summary", {}, el("span", { class: "group-name", text: name }), el("span", { class: "muted", text: ` ${settings.length} settings` })), ...fields);
      first = false;
      return group;
    }),
  );
  markChanged();
}

function filterSettings() {
  const wanted = $("settings-filter").value.trim().toLowerCase();
  for (const group of $("settings-fields").children) {
    let shown = 0;
    for (const field of group.querySelectorAll(".field")) {
      const match = !wanted || field.dataset.key.includes(wanted);
      field.hidden = !match;
      shown += match ? 1 : 0;
    }
    group.hidden = shown === 0;
    if (wanted && shown) group.open = true;
  }
}

function parseValue(setting, text) {
  if (setting.type === "bool") return text.trim().toLowerCase() === "true";
  if (setting.type === "str") return text;
  const value = Number(text);
  return text.trim() === "" || Number.isNaN(value) ? text : value;
}

function changes() {
  const out = {};
  for (const s of state.settings) {
    const value = parseValue(s, $(`setting-${s.key}`).value);
    if (value !== state.values[s.key]) out[s.key] = value;
  }
  return out;
}

function markChanged() {
  const changed = changes();
  for (const field of $("settings-fields").querySelectorAll(".field")) field.classList.toggle("changed", field.dataset.key in changed);
  for (const group of $("settings-fields").children) group.classList.toggle("changed", Boolean(group.querySelector(".field.changed")));
  const any = Object.keys(changed).length > 0;
  $("settings-save").disabled = !any;
  $("settings-revert").disabled = !any;
}

function refreshSettings(values) {
  // Another operator (or node) changed something: show it, unless this one is editing that field.
  for (const s of state.settings) {
    if (values[s.key] === undefined || values[s.key] === state.values[s.key]) continue;
    const input = $(`setting-${s.key}`);
    if (document.activeElement !== input && parseValue(s, input.value) === state.values[s.key]) input.value = String(values[s.key]);
    state.values[s.key] = values[s.key];
  }
  markChanged();
}

async function saveSettings(event) {
  event.preventDefault();
  const status = $("settings-status");
  const wanted = changes();
  for (const input of $("settings-fields").querySelectorAll("input, select")) input.removeAttribute("aria-invalid");
  try {
    const result = await api("PUT", "/v1/ops/config", wanted);
    state.values = { ...result.config };
    for (const s of state.settings) $(`setting-${s.key}`).value = String(result.config[s.key]);
    setStatus(status, `Saved ${Object.keys(wanted).join(", ")}.`, true);
  } catch (error) {
    for (const key of Object.keys(wanted)) if (error.message.includes(key)) $(`setting-${key}`).setAttribute("aria-invalid", "true");
    setStatus(status, `Not saved: ${error.message}`, false);
  }
  markChanged();
}

function revertSettings() {
  for (const s of state.settings) $(`setting-${s.key}`).value = String(state.values[s.key]);
  $("settings-status").textContent = "";
  markChanged();
}

// Start

async function start() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token-input").value.trim());
  });
  $("dev-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const response = await fetch("/v1/dev/token", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ user: $("dev-user").value.trim(), admin: true }) });
      const data = await response.json();
      if (!response.ok) throw new Error(data.error ? data.error.message : `HTTP ${response.status}`);
      await signIn(data.token);
    } catch (error) {
      showLogin(error.message);
    }
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("settings-form").addEventListener("submit", saveSettings);
  $("settings-revert").addEventListener("click", revertSettings);
  $("settings-filter").addEventListener("input", filterSettings);
  try {
    const info = await (await fetch("/v1/info")).json();
    $("dev-form").hidden = !info.dev_login;
  } catch {
    // the info is a convenience: the token form works without it
  }
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) await signIn(saved);
  else showLogin();
}

start();
