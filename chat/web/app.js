// Chat web client: plain ES module, no build step, no dependencies.
//
// Data flow: HTTP for sign-in and channel management, one WebSocket for everything
// live (subscribe / history / send / typing / read). Messages are kept per channel,
// keyed by ID (decimal strings, compared as BigInt), so replays, history pages and
// live frames merge without duplicates. User data only ever reaches the DOM through
// textContent / attributes, never innerHTML.

const TOKEN_KEY = "chat.token";
const SELECTED_KEY = "chat.selected";
const PAGE = 50;
const TYPING_SEND_EVERY_MS = 3000;
const TYPING_SHOW_MS = 4000;
const CHANNEL_POLL_MS = 30000; // a safety net: additions arrive live as `joined` frames
const PREFETCH_CHANNELS = 40; // newest page fetched up front for this many channels
const MAX_CHANNEL_PAGES = 50; // pages of the channel list followed (1,000 channels each)
const GROUP_GAP_MS = 5 * 60 * 1000;

// ---------------------------------------------------------------------------
// Small helpers

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function idCmp(a, b) {
  const x = BigInt(a), y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}
const idMax = (a, b) => (a == null ? b : b == null ? a : idCmp(a, b) >= 0 ? a : b);

function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function jwtSubject(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "="))).sub || null;
  } catch {
    return null;
  }
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: "long", month: "long", day: "numeric" });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });
const shortDayFmt = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });

function dayKey(ts) {
  const d = new Date(ts);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}
function dayLabel(ts) {
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (dayKey(ts) === dayKey(today.getTime())) return "Today";
  if (dayKey(ts) === dayKey(yesterday.getTime())) return "Yesterday";
  return dayFmt.format(new Date(ts));
}
function shortTime(ts) {
  return dayKey(ts) === dayKey(Date.now()) ? timeFmt.format(new Date(ts)) : shortDayFmt.format(new Date(ts));
}

// A stable, pleasant colour per user name.
function userHue(name) {
  let h = 2166136261; // FNV-1a, then one of 18 well-separated hues
  for (const ch of name) {
    h ^= ch.codePointAt(0);
    h = Math.imul(h, 16777619) >>> 0;
  }
  return (h % 18) * 20;
}
function avatar(name, cls = "avatar") {
  const a = el("span", { class: cls, "aria-hidden": "true", text: (name[0] || "?").toUpperCase() });
  a.style.setProperty("--hue", userHue(name));
  return a;
}

// Message text → DOM: text nodes plus http(s) links; newlines are kept by CSS (pre-wrap).
const URL_RE = /\bhttps?:\/\/[^\s<>"']+/g;
function renderText(text) {
  const frag = document.createDocumentFragment();
  let last = 0;
  for (const match of text.matchAll(URL_RE)) {
    let url = match[0].replace(/[.,;:!?)\]]+$/, "");
    const start = match.index;
    if (start > last) frag.append(document.createTextNode(text.slice(last, start)));
    const a = el("a", { href: url, target: "_blank", rel: "noopener noreferrer nofollow", text: url });
    frag.append(a);
    last = start + url.length;
  }
  if (last < text.length) frag.append(document.createTextNode(text.slice(last)));
  return frag;
}

// ---------------------------------------------------------------------------
// Toasts

function toast(message, { kind = "error", timeout = 8000 } = {}) {
  const box = $("toasts");
  // Collapse repeats of the same text.
  for (const existing of box.children) {
    if (existing.dataset.message === message) {
      existing.classList.remove("bump");
      void existing.offsetWidth;
      existing.classList.add("bump");
      return;
    }
  }
  const close = el("button", { type: "button", class: "toast-close", "aria-label": "Dismiss", "data-testid": "toast-close", text: "×" });
  const node = el("div", { class: `toast ${kind}`, role: "status", "data-testid": "toast", dataset: { message } },
    el("span", { class: "toast-text", text: message }), close);
  const dismiss = () => {
    node.remove();
    if (!box.children.length && box.hidePopover && box.matches(":popover-open")) box.hidePopover();
  };
  close.addEventListener("click", dismiss);
  if (timeout) setTimeout(dismiss, timeout);
  box.append(node);
  while (box.children.length > 4) box.firstElementChild.remove();
  if (box.showPopover) {
    // Re-open so the toasts stack above anything that entered the top layer since (a modal dialog).
    if (box.matches(":popover-open")) box.hidePopover();
    box.showPopover();
  }
}

class ApiError extends Error {
  constructor(status, code, message, retryAfterMs) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfterMs;
  }
}

// The socket went away before a reply: not the server's answer, just retry later.
function localError(message) {
  const e = new ApiError(0, "unavailable", message);
  e.local = true;
  return e;
}

function describe(error) {
  if (error instanceof ApiError || error?.code) return `${error.message || error.code}`;
  return error?.message || String(error);
}

// ---------------------------------------------------------------------------
// State

const state = {
  token: null,
  me: null,
  info: { dev_login: false, max_message_chars: 100000 },
  channels: new Map(), // id → Channel
  selected: null,
  conn: null, // Connection
  pollTimer: null,
  readMarks: {}, // channel → newest message ID read, on any device (the server's `last_read`)
  presence: new Map(), // user → {status, last_seen}: DM partners and members of our channels
};

function makeChannel(wire) {
  return {
    id: wire.id,
    kind: wire.kind,
    name: wire.name,
    created_by: wire.created_by,
    created_ts: wire.created_ts || 0,
    members: wire.members || null,
    member_count: wire.member_count ?? null,
    msgs: new Map(), // id → message
    order: [], // ascending IDs
    lastSeen: null, // newest ID seen contiguously from the live tip (for `since`)
    hasMore: null, // older messages exist (null: newest page not loaded yet)
    loaded: false,
    loading: null, // Promise of the newest page
    loadingOlder: false,
    pending: new Map(), // client_msg_id → {client_msg_id, text, ts, status}
    typing: new Map(), // user → expiry timer
    readSent: null,
    knownSince: performance.now(),
  };
}

function displayName(ch) {
  if (ch.kind === "dm") {
    const parts = (ch.members && ch.members.length ? ch.members : ch.name.split(", ")).filter((u) => u !== state.me);
    return parts[0] || ch.name;
  }
  return ch.name;
}

// Read positions are the server's: `last_read` in the channel list, `read` frames from our
// other devices, and our own reads (sent as `read`). Nothing is kept in this browser, so every
// device and every reload shows the same badges.
function setReadMark(channelId, messageId) {
  if (!messageId) return false;
  const current = state.readMarks[channelId];
  if (current && idCmp(current, messageId) >= 0) return false;
  state.readMarks[channelId] = messageId;
  return true;
}

// Presence: a dot and "last seen …" for DM partners and members.
function presenceOf(user) {
  return state.presence.get(user) || null;
}
function presenceLabel(user) {
  const p = presenceOf(user);
  if (!p) return "";
  if (p.status === "online") return "Online";
  return p.last_seen ? `Last seen ${agoLabel(p.last_seen)}` : "Offline";
}
function agoLabel(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ms).toLocaleDateString();
}
function presenceDot(user) {
  const p = presenceOf(user);
  const status = p ? p.status : "unknown";
  return el("span", { class: `presence-dot ${status}`, "data-testid": "presence-dot", "data-status": status, title: presenceLabel(user) || status });
}
function setPresence(user, status, lastSeen) {
  state.presence.set(user, { status, last_seen: lastSeen ?? null });
}
function watchedUsers() {
  const users = new Set();
  for (const ch of state.channels.values()) for (const u of ch.members || (ch.kind === "dm" ? ch.name.split(", ") : [])) users.add(u);
  users.delete(state.me);
  return [...users];
}
// Ask for everyone we show (after hello and when channels change): pushes keep it current.
function queryPresence() {
  const conn = state.conn;
  if (!conn || !conn.open) return;
  const users = watchedUsers().filter((u) => !state.presence.has(u));
  for (let i = 0; i < users.length; i += 1000) conn.send({ op: "presence", id: `pres${++conn.seq}`, users: users.slice(i, i + 1000) });
}

function unreadCount(ch) {
  const mark = state.readMarks[ch.id];
  let n = 0;
  for (let i = ch.order.length - 1; i >= 0; i--) {
    const id = ch.order[i];
    if (mark && idCmp(id, mark) <= 0) break;
    if (ch.msgs.get(id).sender !== state.me) n++;
  }
  return n;
}

// ---------------------------------------------------------------------------
// HTTP

async function api(method, path, body, { token = state.token, quiet = false } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    const e = new ApiError(0, "unavailable", "The server cannot be reached.");
    if (!quiet) toast(e.message);
    throw e;
  }
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const err = data && data.error ? data.error : {};
    const e = new ApiError(response.status, err.code || "internal", err.message || `HTTP ${response.status}`, err.retry_after_ms);
    e.position = err.position; // a busy room's waiting line
    if (response.status === 401 && token && token === state.token) {
      signOut("Your session has expired. Please sign in again.");
    } else if (!quiet) {
      toast(e.message);
    }
    throw e;
  }
  return data;
}

// ---------------------------------------------------------------------------
// WebSocket connection: hello → heartbeat, subscribe; reconnect with backoff.

class Connection {
  constructor() {
    this.ws = null;
    this.open = false; // hello received
    this.attempt = 0;
    this.nextUrl = null; // from a `reconnect` frame
    this.heartbeatTimer = null;
    this.watchdogTimer = null;
    this.retryTimer = null;
    this.retryAt = 0;
    this.lastFrameAt = 0;
    this.heartbeatMs = 5000;
    this.seq = 0;
    this.requests = new Map(); // frame id → {resolve, reject}
    this.subscribed = new Set(); // channel IDs subscribed on this socket
    this.closed = false;
    this.helloSeen = false;
  }

  url() {
    const base = this.nextUrl || `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/v1/ws`;
    this.nextUrl = null;
    const u = new URL(base, location.href);
    if (u.protocol === "http:") u.protocol = "ws:";
    if (u.protocol === "https:") u.protocol = "wss:";
    u.searchParams.set("token", state.token);
    return u.toString();
  }

  connect() {
    if (this.closed) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    setConnState("connecting", this.attempt ? "Reconnecting…" : "Connecting…");
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch (error) {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    this.helloSeen = false;
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      this.lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.handle(frame);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.onClosed(event);
    };
    ws.onerror = () => {};
  }

  onClosed(event) {
    const hadHello = this.helloSeen;
    this.ws = null;
    this.open = false;
    this.subscribed.clear();
    clearInterval(this.heartbeatTimer);
    clearInterval(this.watchdogTimer);
    for (const { reject } of this.requests.values()) reject(localError("connection lost"));
    this.requests.clear();
    for (const ch of state.channels.values()) ch.loading = null;
    if (this.closed) return;
    if (event.code === 4401) {
      signOut("Your session has expired. Please sign in again.");
      return;
    }
    if (!hadHello) {
      // The browser hides the handshake status; ask over HTTP whether the token is the problem.
      api("GET", "/v1/channels", undefined, { quiet: true }).catch(() => {});
    }
    this.scheduleRetry();
  }

  scheduleRetry(delay) {
    if (this.closed) return;
    if (delay === undefined) {
      const base = Math.min(30000, 500 * 2 ** Math.min(this.attempt, 6));
      delay = Math.round(base / 2 + Math.random() * (base / 2));
    }
    this.attempt++;
    this.retryAt = Date.now() + delay;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
    const tick = () => {
      if (!this.retryTimer || this.ws) return;
      const left = Math.max(0, Math.ceil((this.retryAt - Date.now()) / 1000));
      setConnState("offline", left > 0 ? `Offline · retrying in ${left}s` : "Reconnecting…");
      if (left > 0) setTimeout(tick, 250);
    };
    tick();
  }

  retryNow() {
    if (this.ws || this.closed) return;
    this.attempt = 0;
    this.connect();
  }

  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.heartbeatTimer);
    clearInterval(this.watchdogTimer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000, "bye");
    }
  }

  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  // A frame whose reply (same id) resolves the promise; an `error` reply rejects it.
  request(frame) {
    const id = `r${++this.seq}`;
    return new Promise((resolve, reject) => {
      if (!this.open || !this.send({ ...frame, id })) {
        reject(localError("not connected"));
        return;
      }
      this.requests.set(id, { resolve, reject });
    });
  }

  subscribe(ids) {
    const fresh = ids.filter((id) => !this.subscribed.has(id));
    if (!fresh.length || !this.open) return;
    const since = {};
    for (const id of fresh) {
      this.subscribed.add(id);
      const ch = state.channels.get(id);
      if (ch && ch.lastSeen) since[id] = ch.lastSeen;
    }
    for (let i = 0; i < fresh.length; i += 500) {
      const part = fresh.slice(i, i + 500);
      const partSince = {};
      for (const id of part) if (since[id]) partSince[id] = since[id];
      this.send({ op: "subscribe", id: `sub${++this.seq}`, channels: part, since: partSince });
    }
  }

  handle(frame) {
    const op = frame.op || frame.type;
    const pending = frame.id != null ? this.requests.get(frame.id) : undefined;
    if (pending) {
      this.requests.delete(frame.id);
      if (op === "error") pending.reject(new ApiError(0, frame.code, frame.message, frame.retry_after_ms));
      else pending.resolve(frame);
      // Acks and history also carry messages: fall through so they are merged.
      if (op !== "ack") return;
    }
    switch (op) {
      case "hello":
        this.onHello(frame);
        break;
      case "message":
        receiveMessage(frame.message, { live: true });
        break;
      case "messages":
        // A busy room's live messages, gathered into one frame (ascending by ID).
        for (const message of frame.messages || []) receiveMessage(message, { live: true });
        break;
      case "waiting":
      case "admitted":
        onWaitingRoom(frame);
        break;
      case "ack":
        receiveMessage(frame.message, { live: true });
        break;
      case "typing":
        onTyping(frame.channel, frame.user);
        break;
      case "read":
        if (setReadMark(frame.channel, frame.message_id)) renderSidebar();
        break;
      case "resync":
        onResync(frame.channel);
        break;
      case "joined":
        // Someone added us to a channel (DM opened, group created, invited): list and subscribe now.
        syncChannels();
        break;
      case "subscribed":
        break;
      case "unsubscribed":
        if (frame.reason === "removed") for (const id of frame.channels || []) removeChannel(id, "You were removed from a conversation.");
        break;
      case "reconnect":
        this.nextUrl = frame.url || null;
        this.attempt = 0;
        if (this.ws) this.ws.close(1000, "reconnect");
        break;
      case "heartbeat_ack":
        break;
      case "presence":
        if (frame.user) setPresence(frame.user, frame.status, frame.last_seen); // a pushed transition
        else for (const [user, p] of Object.entries(frame.users || {})) setPresence(user, p.status, p.last_seen);
        renderSidebar();
        if (state.selected) renderHeader(state.channels.get(state.selected));
        break;
      case "error":
        onErrorFrame(frame);
        break;
      default:
        break;
    }
  }

  onHello(frame) {
    this.open = true;
    this.helloSeen = true;
    this.attempt = 0;
    if (frame.user && frame.user !== state.me) {
      state.me = frame.user;
      renderMe();
    }
    this.heartbeatMs = Math.max(1000, Number(frame.heartbeat_interval_ms) || 5000);
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = setInterval(() => this.send({ op: "heartbeat" }), this.heartbeatMs);
    clearInterval(this.watchdogTimer);
    this.watchdogTimer = setInterval(() => {
      // No frame at all (not even heartbeat_ack) for a while: the socket is dead.
      if (this.ws && Date.now() - this.lastFrameAt > Math.max(3 * this.heartbeatMs, 15000)) this.ws.close(4000, "timeout");
    }, this.heartbeatMs);
    setConnState("online", "Online");
    syncChannels().then(() => {
      resendPending();
    });
  }
}

function setConnState(kind, label) {
  const node = $("conn-state");
  node.dataset.state = kind;
  node.querySelector(".conn-label").textContent = label;
  node.title = kind === "offline" ? "Click to reconnect now" : "";
  document.body.dataset.conn = kind;
}

// ---------------------------------------------------------------------------
// Channels

async function syncChannels() {
  if (!state.token) return;
  const startedAt = performance.now();
  // The list comes in pages (newest first): follow `next_cursor` to the end, so channels that
  // others added us to can never push our own conversations out of the sidebar.
  const listed = [];
  let cursor = null;
  for (let page = 0; page < MAX_CHANNEL_PAGES; page++) {
    let data;
    try {
      const query = cursor ? `?cursor=${encodeURIComponent(cursor)}` : "";
      data = await api("GET", `/v1/channels${query}`, undefined, { quiet: true });
    } catch {
      return;
    }
    listed.push(...(data.channels || []));
    cursor = data.next_cursor;
    if (!cursor) break;
  }
  const seen = new Set();
  for (const wire of listed) {
    seen.add(wire.id);
    upsertChannel(wire);
  }
  // Gone from the list: left or removed. (Not a channel added while this request was in flight,
  // and only when the whole list was read.)
  if (!cursor) for (const [id, ch] of [...state.channels]) if (!seen.has(id) && ch.knownSince < startedAt) removeChannel(id);
  afterChannelsChanged();
}

function upsertChannel(wire) {
  let ch = state.channels.get(wire.id);
  if (!ch) {
    ch = makeChannel(wire);
    state.channels.set(wire.id, ch);
  } else {
    ch.name = wire.name ?? ch.name;
    if (wire.members) ch.members = wire.members;
    if (wire.member_count != null) ch.member_count = wire.member_count;
  }
  if (wire.last_read) setReadMark(ch.id, wire.last_read);
  return ch;
}

// Subscribe what is not subscribed on this socket, fetch the newest page where missing.
function afterChannelsChanged() {
  const conn = state.conn;
  if (conn && conn.open) {
    conn.subscribe([...state.channels.keys()]);
    const needing = [...state.channels.values()].filter((c) => !c.loaded && !c.loading);
    needing.sort((a, b) => (a.id === state.selected ? -1 : b.id === state.selected ? 1 : idCmp(b.id, a.id)));
    needing.slice(0, PREFETCH_CHANNELS).forEach((c) => loadNewest(c));
    queryPresence();
  }
  if (state.selected && !state.channels.has(state.selected)) selectChannel(null);
  if (!state.selected) {
    const remembered = sessionStorage.getItem(SELECTED_KEY);
    if (remembered && state.channels.has(remembered) && !isNarrow()) selectChannel(remembered);
  }
  renderSidebar();
}

function removeChannel(id, message) {
  const ch = state.channels.get(id);
  if (!ch) return;
  state.channels.delete(id);
  if (state.conn && state.conn.subscribed.has(id)) {
    state.conn.subscribed.delete(id);
    state.conn.send({ op: "unsubscribe", channels: [id] });
  }
  if (message) toast(message, { kind: "info" });
  if (state.selected === id) selectChannel(null);
  renderSidebar();
}

function loadNewest(ch) {
  if (ch.loading) return ch.loading;
  const conn = state.conn;
  if (!conn || !conn.open) return Promise.resolve();
  ch.loading = conn
    .request({ op: "history", channel: ch.id, limit: PAGE })
    .then((reply) => {
      mergeMessages(ch, reply.messages || []);
      if (ch.hasMore === null) ch.hasMore = !!reply.has_more;
      ch.loaded = true;
      for (const m of reply.messages || []) ch.lastSeen = idMax(ch.lastSeen, m.id);
    })
    .catch((error) => {
      if (error.code === "forbidden" || error.code === "not_found") removeChannel(ch.id);
      else if (!error.local) toast(describe(error));
    })
    .finally(() => {
      ch.loading = null;
      if (state.selected === ch.id) renderMessages({ stick: true });
      renderSidebar();
    });
  return ch.loading;
}

async function loadOlder() {
  const ch = state.channels.get(state.selected);
  if (!ch || ch.loadingOlder || !ch.hasMore || !ch.order.length || !state.conn?.open) return;
  ch.loadingOlder = true;
  $("load-older").disabled = true;
  $("load-older").textContent = "Loading…";
  const list = $("messages");
  const fromBottom = list.scrollHeight - list.scrollTop;
  try {
    const reply = await state.conn.request({ op: "history", channel: ch.id, before: ch.order[0], limit: PAGE });
    mergeMessages(ch, reply.messages || []);
    ch.hasMore = !!reply.has_more;
  } catch (error) {
    toast(describe(error));
  } finally {
    ch.loadingOlder = false;
    $("load-older").disabled = false;
    $("load-older").textContent = "Load older messages";
  }
  if (state.selected === ch.id) {
    renderMessages({ stick: false });
    list.scrollTop = list.scrollHeight - fromBottom; // keep the view where it was
  }
}

function mergeMessages(ch, messages) {
  let added = false;
  for (const m of messages) added = insertMessage(ch, m) || added;
  return added;
}

function insertMessage(ch, m) {
  if (m.sender === state.me && m.client_msg_id) ch.pending.delete(m.client_msg_id);
  if (ch.msgs.has(m.id)) {
    ch.msgs.set(m.id, m); // edits/deletions later: newest wins
    return false;
  }
  ch.msgs.set(m.id, m);
  const order = ch.order;
  if (!order.length || idCmp(order[order.length - 1], m.id) < 0) {
    order.push(m.id);
  } else {
    let lo = 0, hi = order.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (idCmp(order[mid], m.id) < 0) lo = mid + 1;
      else hi = mid;
    }
    order.splice(lo, 0, m.id);
  }
  return true;
}

function receiveMessage(m, { live }) {
  if (!m || !m.channel) return;
  const ch = state.channels.get(m.channel);
  if (!ch) {
    // A message for a channel we did not know yet (added elsewhere): pick the list up again.
    syncChannels();
    return;
  }
  const added = insertMessage(ch, m);
  if (live) ch.lastSeen = idMax(ch.lastSeen, m.id);
  if (ch.typing.has(m.sender)) {
    clearTimeout(ch.typing.get(m.sender));
    ch.typing.delete(m.sender);
    if (state.selected === ch.id) renderTyping();
  }
  if (added || m.sender === state.me) {
    if (state.selected === ch.id) renderMessages({ stick: m.sender === state.me ? "force" : true });
    renderSidebar();
  }
}

function onResync(channelId) {
  const ch = state.channels.get(channelId);
  const conn = state.conn;
  if (!ch || !conn || !conn.open) return;
  // Everything up to lastSeen arrived in order before this frame: ask for what follows.
  const since = ch.lastSeen ? { [channelId]: ch.lastSeen } : {};
  conn.send({ op: "subscribe", id: `sub${++conn.seq}`, channels: [channelId], since });
  if (!ch.lastSeen) {
    ch.loaded = false;
    loadNewest(ch);
  }
}

function onErrorFrame(frame) {
  if (frame.channel && (frame.code === "forbidden" || frame.code === "not_found")) {
    // A subscribe for a channel we may no longer use.
    removeChannel(frame.channel);
    return;
  }
  toast(frame.message || frame.code || "Something went wrong");
}

// ---------------------------------------------------------------------------
// Sending

function sendMessage(text) {
  const ch = state.channels.get(state.selected);
  if (!ch) return;
  if ([...text].length > state.info.max_message_chars) {
    toast(`Messages are limited to ${state.info.max_message_chars.toLocaleString()} characters.`);
    return false;
  }
  const item = { client_msg_id: newClientId(), text, ts: Date.now(), status: "sending" };
  ch.pending.set(item.client_msg_id, item);
  transmit(ch, item);
  renderMessages({ stick: "force" });
  renderSidebar();
  return true;
}

function transmit(ch, item) {
  const conn = state.conn;
  item.status = "sending";
  if (!conn || !conn.open) {
    item.status = "queued"; // resent when the socket is back (same client_msg_id: no duplicate)
    return;
  }
  conn
    .request({ op: "send", channel: ch.id, text: item.text, client_msg_id: item.client_msg_id })
    .then((reply) => {
      // Merged by Connection.handle (ack falls through to receiveMessage).
      ch.pending.delete(item.client_msg_id);
      if (state.selected === ch.id) renderMessages({ stick: "force" });
    })
    .catch((error) => {
      if (!ch.pending.has(item.client_msg_id)) return;
      if (error.local) {
        item.status = "queued"; // resent on the next hello
      } else if (["rate_limited", "throttled", "unavailable"].includes(error.code)) {
        item.status = "queued";
        setTimeout(() => {
          if (ch.pending.has(item.client_msg_id) && item.status === "queued") transmit(ch, item);
        }, Math.max(500, error.retryAfterMs || 1500));
      } else {
        item.status = "failed";
        item.error = describe(error);
        toast(`Not sent: ${describe(error)}`);
      }
      if (state.selected === ch.id) renderMessages({ stick: false });
    });
}

function resendPending() {
  for (const ch of state.channels.values()) {
    for (const item of ch.pending.values()) if (item.status !== "failed") transmit(ch, item);
  }
  if (state.selected) renderMessages({ stick: false });
}

// ---------------------------------------------------------------------------
// Typing and read markers

let lastTypingSent = 0;
let lastTypingChannel = null;
function noteTyping() {
  const ch = state.selected;
  const now = Date.now();
  if (!ch || !state.conn?.open) return;
  if (ch === lastTypingChannel && now - lastTypingSent < TYPING_SEND_EVERY_MS) return;
  lastTypingSent = now;
  lastTypingChannel = ch;
  state.conn.send({ op: "typing", channel: ch });
}

function onTyping(channelId, user) {
  const ch = state.channels.get(channelId);
  if (!ch || !user || user === state.me) return;
  clearTimeout(ch.typing.get(user));
  ch.typing.set(user, setTimeout(() => {
    ch.typing.delete(user);
    if (state.selected === channelId) renderTyping();
    renderSidebar();
  }, TYPING_SHOW_MS));
  if (state.selected === channelId) renderTyping();
  renderSidebar();
}

function renderTyping() {
  const node = $("typing");
  const ch = state.channels.get(state.selected);
  const users = ch ? [...ch.typing.keys()] : [];
  node.replaceChildren();
  if (!users.length) {
    node.classList.remove("active");
    return;
  }
  let text;
  if (users.length === 1) text = `${users[0]} is typing…`;
  else if (users.length === 2) text = `${users[0]} and ${users[1]} are typing…`;
  else text = "Several people are typing…";
  node.append(el("span", { class: "typing-dots", "aria-hidden": "true" }, el("i"), el("i"), el("i")), el("span", { text }));
  node.classList.add("active");
}

function maybeMarkRead() {
  const ch = state.channels.get(state.selected);
  if (!ch || !ch.order.length || document.visibilityState !== "visible") return;
  const list = $("messages");
  if (list.scrollHeight - list.scrollTop - list.clientHeight > 48) return; // newest not on screen
  const newest = ch.order[ch.order.length - 1];
  const changed = setReadMark(ch.id, newest);
  if ((!ch.readSent || idCmp(newest, ch.readSent) > 0) && state.conn?.open) {
    ch.readSent = newest;
    state.conn.send({ op: "read", channel: ch.id, message_id: newest });
  }
  if (changed) renderSidebar();
}

// ---------------------------------------------------------------------------
// Rendering: sidebar

function lastActivity(ch) {
  return ch.order.length ? ch.order[ch.order.length - 1] : ch.id;
}

function renderSidebar() {
  const lists = {
    room: document.querySelector('[data-testid="channel-list-room"]'),
    group: document.querySelector('[data-testid="channel-list-group"]'),
    dm: document.querySelector('[data-testid="channel-list-dm"]'),
  };
  const byKind = { room: [], group: [], dm: [] };
  for (const ch of state.channels.values()) (byKind[ch.kind] || byKind.group).push(ch);
  let totalUnread = 0;
  for (const [kind, channels] of Object.entries(byKind)) {
    channels.sort((a, b) => idCmp(lastActivity(b), lastActivity(a)));
    const items = channels.map((ch) => {
      const unread = ch.id === state.selected ? 0 : unreadCount(ch);
      totalUnread += unread;
      // Reuse unchanged items: the list re-renders often, and a node swapped between
      // mousedown and mouseup would swallow the click.
      const sig = channelSignature(ch, unread);
      let cached = sidebarCache.get(ch.id);
      if (!cached || cached.sig !== sig) {
        cached = { sig, node: channelItem(ch, unread) };
        sidebarCache.set(ch.id, cached);
      }
      return cached.node;
    });
    const list = lists[kind];
    if (items.length !== list.children.length || items.some((node, i) => list.children[i] !== node)) list.replaceChildren(...items);
  }
  for (const id of sidebarCache.keys()) if (!state.channels.has(id)) sidebarCache.delete(id);
  $("no-channels").hidden = state.channels.size > 0;
  document.title = totalUnread ? `(${totalUnread}) Chat` : "Chat";
}

const sidebarCache = new Map(); // channel id → {sig, node}

function channelSignature(ch, unread) {
  const last = ch.order.length ? ch.msgs.get(ch.order[ch.order.length - 1]) : null;
  const partner = ch.kind === "dm" ? presenceOf(displayName(ch)) : null;
  return JSON.stringify([displayName(ch), ch.id === state.selected, unread, last?.id, last?.text, [...ch.typing.keys()][0] || "", partner?.status, partner?.last_seen]);
}

function channelItem(ch, unread) {
  const name = displayName(ch);
  const icon = ch.kind === "dm" ? el("span", { class: "avatar-wrap" }, avatar(name, "avatar small"), presenceDot(name)) : el("span", { class: `kind-icon ${ch.kind}`, "aria-hidden": "true", text: ch.kind === "room" ? "#" : "" });
  if (ch.kind === "group") icon.style.setProperty("--hue", userHue(ch.name));
  const last = ch.order.length ? ch.msgs.get(ch.order[ch.order.length - 1]) : null;
  let preview = "";
  if (ch.typing.size) preview = `${[...ch.typing.keys()][0]} is typing…`;
  else if (last) preview = `${last.sender === state.me ? "You" : last.sender}: ${last.text.replace(/\s+/g, " ").slice(0, 80)}`;
  const meta = el("span", { class: "channel-meta" });
  if (last) meta.append(el("time", { class: "channel-time", text: shortTime(last.ts) }));
  if (unread) meta.append(el("span", { class: "badge", "data-testid": "unread-badge", text: unread > 99 ? "99+" : String(unread) }));
  const button = el(
    "button",
    { type: "button", class: "channel-button", "aria-current": ch.id === state.selected ? "page" : null },
    icon,
    el("span", { class: "channel-text" },
      el("span", { class: "channel-name", "data-testid": "channel-name", text: name }),
      el("span", { class: `channel-preview${ch.typing.size ? " is-typing" : ""}`, text: preview })),
    meta,
  );
  button.addEventListener("click", () => selectChannel(ch.id));
  return el("li", {
    class: `channel-item${ch.id === state.selected ? " selected" : ""}${unread ? " unread" : ""}`,
    "data-testid": "channel-item",
    "data-channel-id": ch.id,
    "data-kind": ch.kind,
    "data-name": name,
  }, button);
}

// ---------------------------------------------------------------------------
// Rendering: messages (keyed, incremental: scroll position and selection survive)

const nodes = new Map(); // key → element, for the selected channel
let renderedChannel = null;

function isNearBottom() {
  const list = $("messages");
  return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
}

function renderMessages({ stick = true } = {}) {
  const ch = state.channels.get(state.selected);
  const container = $("message-items");
  if (!ch) return;
  if (renderedChannel !== ch.id) {
    nodes.clear();
    container.replaceChildren();
    renderedChannel = ch.id;
    stick = "force";
  }
  const wasAtBottom = isNearBottom();

  const items = ch.order.map((id) => ({ key: id, m: ch.msgs.get(id), pending: null }));
  for (const p of ch.pending.values()) items.push({ key: `p:${p.client_msg_id}`, m: { id: null, sender: state.me, text: p.text, ts: p.ts }, pending: p });

  const keep = new Set(items.map((i) => i.key));
  for (const [key, node] of nodes) {
    if (!keep.has(key)) {
      node.remove();
      nodes.delete(key);
    }
  }
  let prev = null;
  let cursor = container.firstChild;
  for (const item of items) {
    const { m } = item;
    const newDay = !prev || dayKey(prev.ts) !== dayKey(m.ts);
    const continued = !newDay && prev.sender === m.sender && m.ts - prev.ts < GROUP_GAP_MS;
    let node = nodes.get(item.key);
    const sig = `${m.text}|${item.pending?.status || ""}|${newDay}|${continued}`;
    if (!node || node.dataset.sig !== sig) {
      const fresh = messageNode(m, item.pending, { newDay, continued });
      fresh.dataset.sig = sig;
      if (node) {
        if (node === cursor) cursor = node.nextSibling;
        node.remove();
      }
      node = fresh;
      nodes.set(item.key, node);
    }
    if (node !== cursor) container.insertBefore(node, cursor);
    cursor = node.nextSibling;
    prev = m;
  }

  $("load-older").hidden = !ch.hasMore;
  $("history-start").hidden = !(ch.loaded && ch.hasMore === false);
  if (stick === "force" || (stick && wasAtBottom)) {
    scrollToBottom();
  } else if (!wasAtBottom && stick) {
    $("jump-latest").hidden = false;
  }
  maybeMarkRead();
}

function scrollToBottom() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
  $("jump-latest").hidden = true;
}

function messageNode(m, pending, { newDay, continued }) {
  const mine = m.sender === state.me;
  const classes = ["message", mine ? "mine" : "theirs"];
  if (continued) classes.push("continued");
  if (pending) classes.push("pending", pending.status);
  const node = el("div", {
    class: classes.join(" "),
    "data-testid": "message",
    "data-id": m.id || null,
    "data-sender": m.sender,
    "data-pending": pending ? pending.status : null,
  });
  node.style.setProperty("--hue", userHue(m.sender));
  if (newDay) node.append(el("div", { class: "day-divider", "data-testid": "day-divider" }, el("span", { text: dayLabel(m.ts) })));
  const row = el("div", { class: "message-row" });
  if (!mine) row.append(continued ? el("span", { class: "avatar-spacer" }) : avatar(m.sender));
  const bubble = el("div", { class: "bubble" });
  bubble.append(el("div", { class: "sender", "data-testid": "message-sender", text: m.sender }));
  bubble.append(el("div", { class: "text", "data-testid": "message-text" }, renderText(m.text)));
  const meta = el("div", { class: "meta" });
  meta.append(el("time", { datetime: new Date(m.ts).toISOString(), title: fullFmt.format(new Date(m.ts)), text: timeFmt.format(new Date(m.ts)) }));
  if (pending) {
    const label = pending.status === "failed" ? "Not sent" : pending.status === "queued" ? "Waiting for connection" : "Sending…";
    meta.append(el("span", { class: "status", "data-testid": "message-status", text: label }));
    if (pending.status === "failed") {
      const retry = el("button", { type: "button", class: "link", "data-testid": "message-retry", text: "Retry" });
      retry.addEventListener("click", () => {
        const ch = state.channels.get(state.selected);
        if (ch) transmit(ch, pending);
        renderMessages({ stick: false });
      });
      const discard = el("button", { type: "button", class: "link", text: "Discard" });
      discard.addEventListener("click", () => {
        const ch = state.channels.get(state.selected);
        if (ch) ch.pending.delete(pending.client_msg_id);
        renderMessages({ stick: false });
      });
      meta.append(retry, discard);
    }
  }
  bubble.append(meta);
  row.append(bubble);
  node.append(row);
  return node;
}

// ---------------------------------------------------------------------------
// Selection and header

function isNarrow() {
  return window.matchMedia("(max-width: 760px)").matches;
}

async function selectChannel(id) {
  state.selected = id;
  const ch = id ? state.channels.get(id) : null;
  document.body.classList.toggle("show-chat", !!ch);
  $("chat-empty").hidden = !!ch;
  $("chat-header").hidden = !ch;
  $("messages-wrap").hidden = !ch;
  $("composer-form").hidden = !ch;
  $("jump-latest").hidden = true;
  if (!ch) {
    sessionStorage.removeItem(SELECTED_KEY);
    renderedChannel = null;
    $("message-items").replaceChildren();
    renderTyping();
    renderSidebar();
    return;
  }
  sessionStorage.setItem(SELECTED_KEY, id);
  renderHeader(ch);
  renderMessages({ stick: "force" });
  renderTyping();
  renderSidebar();
  if (!isNarrow()) $("composer").focus();
  if (!ch.loaded) loadNewest(ch);
  // Details (member list / count) for the header.
  try {
    const data = await api("GET", `/v1/channels/${id}`, undefined, { quiet: true });
    upsertChannel(data.channel);
    if (state.selected === id) renderHeader(ch);
  } catch {
    /* header shows what the list had */
  }
}

function renderHeader(ch) {
  $("channel-title").textContent = (ch.kind === "room" ? "# " : "") + displayName(ch);
  const subtitleNode = $("channel-subtitle");
  subtitleNode.replaceChildren();
  if (ch.kind === "dm") {
    const partner = displayName(ch);
    subtitleNode.append(presenceDot(partner), el("span", { "data-testid": "presence-label", text: presenceLabel(partner) || "Direct message" }));
  } else {
    const count = ch.member_count ?? ch.members?.length;
    const kind = ch.kind === "room" ? "Room" : "Group";
    subtitleNode.append(count ? `${kind} · ${count} member${count === 1 ? "" : "s"}` : kind);
    if (ch.members && ch.members.length <= 8) {
      subtitleNode.append(" · ");
      ch.members.forEach((m, i) => {
        if (i) subtitleNode.append(", ");
        subtitleNode.append(el("span", { class: "member", title: presenceLabel(m) }, m === state.me ? "" : presenceDot(m), m));
      });
    }
  }
  $("add-member-button").hidden = ch.kind === "dm";
  $("leave-button").hidden = ch.kind === "dm";
  $("copy-id-button").hidden = ch.kind !== "room";
}

// ---------------------------------------------------------------------------
// Dialog: new DM / group / room, join room, add member

const DIALOG = {
  dm: { title: "Message someone", submit: "Open", hint: "The same two people always share one conversation.", focus: "dm-user" },
  group: { title: "New group", submit: "Create group", hint: "Groups are invite-only; any member can add people.", focus: "new-name" },
  room: { title: "New room", submit: "Create room", hint: "Rooms are open: anyone with the room ID can join.", focus: "new-name" },
  join: { title: "Join a room", submit: "Join", hint: "Ask a member for the room ID (“Copy ID” in the room's header).", focus: "join-id" },
  add: { title: "Add people", submit: "Add", hint: "", focus: "add-user" },
};
let dialogMode = "dm";

function openDialog(mode) {
  const dialog = $("dialog");
  setDialogMode(mode);
  $("dialog-tabs").hidden = mode === "add";
  for (const id of ["dm-user", "new-name", "new-members", "join-id", "add-user"]) $(id).value = "";
  $("dialog-error").hidden = true;
  if (!dialog.open) dialog.showModal();
  $(DIALOG[mode].focus).focus();
}

function setDialogMode(mode) {
  dialogMode = mode;
  $("dialog-error").hidden = true;
  const spec = DIALOG[mode];
  $("dialog").dataset.mode = mode;
  $("dialog-title").textContent = mode === "add" ? `Add people to ${displayName(state.channels.get(state.selected) || { name: "" })}` : spec.title;
  $("dialog-submit").textContent = spec.submit;
  $("dialog-hint").textContent = spec.hint;
  for (const field of document.querySelectorAll("#dialog .field")) field.hidden = !field.dataset.for.split(" ").includes(mode);
  for (const tab of document.querySelectorAll("#dialog-tabs [data-mode]")) tab.setAttribute("aria-selected", String(tab.dataset.mode === mode));
}

// Joining a busy room may mean waiting in line: the server answers `throttled` with our place and,
// when it is our turn, sends `admitted` with a ticket; we join again then (or after retry_after_ms,
// which keeps our place).
const admissions = new Map(); // room ID → wakes the join waiting for that room

async function joinRoom(id, quiet) {
  let ticket;
  for (let tries = 0; tries < 120; tries++) {
    try {
      return await api("POST", `/v1/channels/${id}/members`, ticket ? { ticket } : {}, quiet);
    } catch (e) {
      if (e.code !== "throttled") throw e;
      if (e.position) toast(`This room is busy: you are number ${e.position} in line.`, { kind: "info", timeout: 4000 });
      ticket = await new Promise((resolve) => {
        admissions.set(id, resolve);
        setTimeout(() => resolve(undefined), Math.max(250, e.retryAfterMs || 1000));
      });
      admissions.delete(id);
    }
  }
  throw new ApiError(429, "throttled", "This room is still too busy; try again later.");
}

function onWaitingRoom(frame) {
  const wake = admissions.get(frame.channel);
  if (frame.op === "admitted" && wake) wake(frame.ticket);
}

async function submitDialog() {
  const submit = $("dialog-submit");
  const quiet = { quiet: true }; // errors show inside the dialog (a modal makes the page, toasts included, inert)
  $("dialog-error").hidden = true;
  submit.disabled = true;
  try {
    let channel = null;
    if (dialogMode === "dm") {
      const user = $("dm-user").value.trim();
      if (!user) return $("dm-user").focus();
      channel = (await api("POST", "/v1/dms", { user }, quiet)).channel;
    } else if (dialogMode === "group" || dialogMode === "room") {
      const name = $("new-name").value.trim();
      if (!name) return $("new-name").focus();
      const members = $("new-members").value.split(/[\s,]+/).map((s) => s.replace(/^@/, "")).filter(Boolean);
      channel = (await api("POST", "/v1/channels", { kind: dialogMode, name, members }, quiet)).channel;
    } else if (dialogMode === "join") {
      const id = $("join-id").value.trim();
      if (!/^\d{1,20}$/.test(id)) throw new ApiError(400, "bad_request", "A room ID is a number.");
      await joinRoom(id, quiet);
      channel = (await api("GET", `/v1/channels/${id}`, undefined, quiet)).channel;
    } else if (dialogMode === "add") {
      const user = $("add-user").value.trim();
      const ch = state.channels.get(state.selected);
      if (!user || !ch) return $("add-user").focus();
      await api("POST", `/v1/channels/${ch.id}/members`, { user }, quiet);
      toast(`${user} was added.`, { kind: "info", timeout: 4000 });
      $("dialog").close();
      selectChannel(ch.id);
      return;
    }
    $("dialog").close();
    if (channel) {
      upsertChannel(channel);
      afterChannelsChanged();
      selectChannel(channel.id);
    }
  } catch (error) {
    $("dialog-error").textContent = describe(error);
    $("dialog-error").hidden = false;
  } finally {
    submit.disabled = false;
  }
}

async function leaveSelected() {
  const ch = state.channels.get(state.selected);
  if (!ch || ch.kind === "dm") return;
  if (!confirm(`Leave ${displayName(ch)}?`)) return;
  try {
    await api("DELETE", `/v1/channels/${ch.id}/members/${encodeURIComponent(state.me)}`);
    removeChannel(ch.id);
  } catch {
    /* toast shown */
  }
}

// ---------------------------------------------------------------------------
// Sign-in / sign-out

function renderMe() {
  $("me-name").textContent = state.me || "";
  const a = avatar(state.me || "?");
  a.id = "me-avatar";
  $("me-avatar").replaceWith(a);
}

function showLogin() {
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  $("dev-login-form").hidden = !state.info.dev_login;
  $("login-divider").hidden = !state.info.dev_login;
  $("login-node").textContent = state.info.node_id ? `Node ${state.info.node_id}` : "";
  (state.info.dev_login ? $("login-user") : $("login-token")).focus();
}

async function signIn(token) {
  // Check the token before keeping it.
  try {
    await api("GET", "/v1/channels", undefined, { token, quiet: true });
  } catch (error) {
    toast(error.status === 401 ? "That token was not accepted." : describe(error));
    return false;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  start(token);
  return true;
}

function start(token) {
  state.token = token;
  state.me = jwtSubject(token);
  state.readMarks = {};
  state.presence.clear();
  renderMe();
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  selectChannel(null);
  state.conn = new Connection();
  state.conn.connect();
  clearInterval(state.pollTimer);
  state.pollTimer = setInterval(() => {
    if (state.conn?.open && document.visibilityState === "visible") syncChannels();
  }, CHANNEL_POLL_MS);
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(SELECTED_KEY);
  clearInterval(state.pollTimer);
  if (state.conn) state.conn.close();
  state.conn = null;
  state.token = null;
  state.me = null;
  state.channels.clear();
  state.selected = null;
  renderedChannel = null;
  nodes.clear();
  $("message-items").replaceChildren();
  renderSidebar();
  document.title = "Chat";
  if (message) toast(message, { kind: "info" });
  showLogin();
}

// ---------------------------------------------------------------------------
// Wiring

function autosize() {
  const box = $("composer");
  box.style.height = "auto";
  box.style.height = `${Math.min(box.scrollHeight, 200)}px`;
  const n = box.value.length;
  const max = state.info.max_message_chars;
  const counter = $("char-count");
  counter.hidden = n < max * 0.9;
  counter.textContent = `${n.toLocaleString()} / ${max.toLocaleString()}`;
  counter.classList.toggle("over", n > max);
}

function wire() {
  $("dev-login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const user = $("login-user").value.trim();
    if (!user) return;
    const button = event.submitter || $("dev-login-form").querySelector("button");
    button.disabled = true;
    try {
      const data = await api("POST", "/v1/dev/token", { user }, { token: null });
      await signIn(data.token);
    } catch {
      /* toast shown */
    } finally {
      button.disabled = false;
    }
  });
  $("token-login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = $("login-token").value.trim().replace(/^Bearer\s+/i, "");
    if (token) await signIn(token);
  });
  $("logout-button").addEventListener("click", () => signOut());
  $("conn-state").addEventListener("click", () => state.conn?.retryNow());

  $("new-button").addEventListener("click", () => openDialog("dm"));
  for (const button of document.querySelectorAll("[data-open-dialog]")) {
    button.addEventListener("click", () => openDialog(button.dataset.openDialog));
  }
  for (const tab of document.querySelectorAll("#dialog-tabs [data-mode]")) {
    tab.addEventListener("click", () => {
      setDialogMode(tab.dataset.mode);
      $(DIALOG[tab.dataset.mode].focus).focus();
    });
  }
  $("dialog-form").addEventListener("submit", (event) => {
    event.preventDefault();
    submitDialog();
  });
  $("dialog-cancel").addEventListener("click", () => $("dialog").close());

  $("add-member-button").addEventListener("click", () => openDialog("add"));
  $("leave-button").addEventListener("click", leaveSelected);
  $("copy-id-button").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(state.selected);
      toast("Room ID copied.", { kind: "info", timeout: 2500 });
    } catch {
      toast(`Room ID: ${state.selected}`, { kind: "info", timeout: 15000 });
    }
  });
  $("back-button").addEventListener("click", () => selectChannel(null));

  const composer = $("composer");
  composer.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !event.altKey && !event.ctrlKey && !event.metaKey) {
      event.preventDefault();
      $("composer-form").requestSubmit();
    }
  });
  composer.addEventListener("input", () => {
    autosize();
    if (composer.value.trim()) noteTyping();
  });
  $("composer-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = composer.value;
    if (!text.trim()) return;
    if (sendMessage(text) === false) return;
    composer.value = "";
    autosize();
    lastTypingSent = 0;
    composer.focus();
  });

  $("load-older").addEventListener("click", loadOlder);
  $("messages").addEventListener("scroll", () => {
    if (isNearBottom()) {
      $("jump-latest").hidden = true;
      maybeMarkRead();
    }
  }, { passive: true });
  $("jump-latest").addEventListener("click", () => {
    scrollToBottom();
    maybeMarkRead();
  });

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") {
      maybeMarkRead();
      if (state.conn?.open) syncChannels();
    }
  });
  window.addEventListener("online", () => state.conn?.retryNow());
  window.addEventListener("focus", () => maybeMarkRead());
  // Relative day labels ("Today") go stale at midnight; re-render occasionally.
  setInterval(() => {
    if (state.selected) {
      nodes.forEach((n) => delete n.dataset.sig);
      renderMessages({ stick: false });
    }
  }, 10 * 60 * 1000);
}

async function main() {
  wire();
  try {
    state.info = { ...state.info, ...(await api("GET", "/v1/info", undefined, { token: null, quiet: true })) };
  } catch {
    /* older node without /v1/info: token sign-in only */
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) start(token);
  else showLogin();
}

main();
