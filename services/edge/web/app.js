// The browser client: rooms, direct messages, unread counts, search and
// presence over one WebSocket plus the history and presence HTTP APIs.
// Every user-provided string is rendered as text (see render.js).

import { Api, ApiError, decodeToken, ROOM_RE, USER_RE } from "./api.js";
import { Connection } from "./conn.js";
import { messageElement, setState, el, mentions } from "./render.js";

const PAGE = 50;        // messages per history page
const MAX_DOM = 300;    // messages kept in the DOM per conversation
const MAX_BUFFER = 500; // live events held while a conversation shows older history
const MAX_CHARS = 4000; // the edge's content limit (characters)

const $ = (id) => document.getElementById(id);

let token = "", me = "", api = null, conn = null, expiryTimer = null;
const convs = new Map();  // "#room" or "@peer" -> conversation
const outbox = new Map(); // client_id -> {frame, key, li, attempt, timer, state}
const seenBroadcasts = new Set();
let current = null;       // the open conversation
let readMarks = {};       // key -> id of the newest message read
let dmCursor = "";        // newest private message id seen
let countdown = null;

// --- per-user storage: joined rooms and read positions survive reloads.
function load(k, def) {
  try { return JSON.parse(localStorage.getItem(`chat:${me}:${k}`)) ?? def; } catch { return def; }
}
function save(k, v) {
  try { localStorage.setItem(`chat:${me}:${k}`, JSON.stringify(v)); } catch { /* storage full or off */ }
}
const saveRooms = () => save("rooms", [...convs.values()].filter((c) => c.kind === "room").map((c) => c.name));

// --- conversations

function conv(kind, name) {
  const key = (kind === "room" ? "#" : "@") + name;
  let c = convs.get(key);
  if (c) return c;
  c = {
    key, kind, name,
    list: el("ol", { class: "msgs" }),
    ids: new Map(), cids: new Map(), // by event id; by username + client_id
    loaded: false, loading: null, noOlder: false, detached: false, buffer: [],
    lastPos: "", joined: false, unread: 0, mentioned: 0, latest: "",
    scrollTop: null, online: null, item: null,
  };
  convs.set(key, c);
  sidebarItem(c);
  return c;
}

function sidebarItem(c) {
  const name = el("span", { class: "name", text: c.kind === "room" ? "# " + c.name : c.name });
  const unread = el("span", { class: "unread", "aria-label": "unread messages" });
  const btn = el("button", { type: "button", class: "open" });
  if (c.kind === "dm") btn.append(el("span", { class: "dot", "aria-hidden": "true" }));
  btn.append(name, unread);
  btn.addEventListener("click", () => openConv(c));
  c.item = el("li", { "data-key": c.key }, btn);
  c.unreadEl = unread;
  c.btn = btn;
  const list = c.kind === "room" ? $("rooms") : $("dms");
  if (c.kind === "room") list.append(c.item);
  else list.prepend(c.item);
  updateBadge(c);
}

function updateBadge(c) {
  c.unreadEl.textContent = c.unread ? (c.unread > 99 ? "99+" : String(c.unread)) : "";
  c.unreadEl.classList.toggle("mentioned", c.mentioned > 0);
  c.item.classList.toggle("has-unread", c.unread > 0);
  c.item.classList.toggle("current", c === current);
  const dot = c.item.querySelector(".dot");
  if (dot) dot.classList.toggle("online", !!c.online);
  const label = (c.kind === "room" ? "room " : "conversation with ") + c.name +
    (c.unread ? `, ${c.unread} unread` + (c.mentioned ? ", mentions you" : "") : "") +
    (c.kind === "dm" ? (c.online ? ", online" : ", offline") : "");
  c.btn.setAttribute("aria-label", label);
  if (c === current) c.btn.setAttribute("aria-current", "true");
  else c.btn.removeAttribute("aria-current");
  let total = 0;
  for (const x of convs.values()) total += x.unread;
  document.title = (total ? `(${total}) ` : "") + "chat" + (me ? " · " + me : "");
}

// bumpDM moves a conversation to the top of the list (newest activity first).
function bumpDM(c) {
  if (c.kind === "dm" && $("dms").firstChild !== c.item) $("dms").prepend(c.item);
}

function visible() {
  return document.visibilityState === "visible";
}

function newestId(c) {
  for (let li = c.list.lastElementChild; li; li = li.previousElementSibling) if (li.dataset.id) return li.dataset.id;
  return "";
}
function oldestId(c) {
  for (let li = c.list.firstElementChild; li; li = li.nextElementSibling) if (li.dataset.id) return li.dataset.id;
  return "";
}

function markRead(c) {
  const id = [newestId(c), c.latest].sort().pop();
  if (id && (readMarks[c.key] || "") < id) {
    readMarks[c.key] = id;
    save("read", readMarks);
  }
  if (c.unread || c.mentioned) {
    c.unread = 0;
    c.mentioned = 0;
  }
  updateBadge(c);
}

// posAfter tells whether log position a ("p:o") is after b.
function posAfter(a, b) {
  if (!b) return true;
  const [pa, oa] = a.split(":").map(Number), [pb, ob] = b.split(":").map(Number);
  return pa !== pb ? true : oa > ob;
}

const log = $("log");
const atBottom = () => log.scrollTop + log.clientHeight >= log.scrollHeight - 8;

// A resend after a lost ack can put one message in the log twice (new id,
// same client_id): the sender's name and client_id identify it.
const cidKey = (user, cid) => user + "\u0000" + cid;

// register makes li the element of its event in c.
function register(c, li) {
  if (li.dataset.id) c.ids.set(li.dataset.id, li);
  if (li.dataset.cid && li.dataset.user) c.cids.set(cidKey(li.dataset.user, li.dataset.cid), li);
}
function unregister(c, li) {
  if (li.dataset.id && c.ids.get(li.dataset.id) === li) c.ids.delete(li.dataset.id);
  const k = li.dataset.cid && li.dataset.user && cidKey(li.dataset.user, li.dataset.cid);
  if (k && c.cids.get(k) === li) c.cids.delete(k);
}

// render makes an event's element; one of the user's own messages still in
// the outbox keeps its delivery state.
function render(c, ev) {
  const li = messageElement(ev, me);
  if (ev.username === me && ev.type !== "system") {
    const o = ev.client_id && outbox.get(ev.client_id);
    if (o) { o.li = li; setState(li, o.state, o.detail); } else setState(li, "sent");
  }
  return li;
}

// seen reports whether c already shows ev (by id, or by sender and
// client_id), upgrading one of the user's pending messages in place.
function seen(c, ev) {
  if (ev.id && c.ids.has(ev.id)) return true;
  const li = ev.client_id && ev.username && c.cids.get(cidKey(ev.username, ev.client_id));
  if (li) {
    if (ev.username === me && !li.dataset.id && ev.id) {
      li.dataset.id = ev.id;
      c.ids.set(ev.id, li);
      c.list.append(li); // the log's order, not the order of typing
    }
    return true;
  }
  return false;
}

function trimTop(c) {
  while (c.list.children.length > MAX_DOM) {
    const li = c.list.firstElementChild;
    unregister(c, li);
    li.remove();
    c.noOlder = false;
  }
}

// append adds a newer event at the end.
function append(c, ev) {
  if (seen(c, ev)) return null;
  const stick = c === current && atBottom();
  const li = render(c, ev);
  c.list.append(li);
  register(c, li);
  trimTop(c);
  if (stick) log.scrollTop = log.scrollHeight;
  return li;
}

// live handles an event from the socket for conversation c.
function live(c, ev) {
  if (ev.id && (c.latest || "") < ev.id) c.latest = ev.id;
  if (c.kind === "room" && ev.pos && posAfter(ev.pos, c.lastPos)) c.lastPos = ev.pos;
  if (c.detached) {
    if (!c.ids.has(ev.id)) {
      c.buffer.push(ev);
      if (c.buffer.length > MAX_BUFFER) c.buffer.shift();
      countUnread(c, ev);
    }
    return;
  }
  if (append(c, ev)) countUnread(c, ev);
  if (c.kind === "dm") bumpDM(c);
}

function countUnread(c, ev) {
  if (ev.username === me) return;
  if (c === current && visible()) { markRead(c); return; }
  if (ev.id && ev.id <= (readMarks[c.key] || "")) return;
  c.unread++;
  if (mentions(ev.content, me)) c.mentioned++;
  updateBadge(c);
}

// resetWith shows msgs (oldest first) in c; with keepNewer, live events
// newer than the page stay after it.
function resetWith(c, msgs, keepNewer) {
  const last = msgs.length ? msgs[msgs.length - 1].id : "";
  const inPage = new Set(msgs.map((m) => m.id));
  const keep = [], pending = [];
  for (const li of c.list.children) {
    if (li.dataset.id) {
      if (keepNewer && li.dataset.id > last && !inPage.has(li.dataset.id)) keep.push(li);
    } else if (li.dataset.cid && outbox.has(li.dataset.cid)) pending.push(li);
  }
  c.ids.clear();
  c.cids.clear();
  c.list.replaceChildren();
  for (const m of msgs) {
    const li = render(c, m);
    c.list.append(li);
    register(c, li);
  }
  for (const li of [...keep, ...pending]) {
    if (seen(c, { id: li.dataset.id, username: li.dataset.user, client_id: li.dataset.cid })) continue;
    c.list.append(li);
    register(c, li);
  }
  if (keepNewer) {
    const buf = c.buffer;
    c.buffer = [];
    c.detached = false;
    for (const ev of buf) append(c, ev);
  }
  trimTop(c);
}

function note(c, text) {
  c.list.append(el("li", { class: "msg note", text }));
  trimTop(c);
}

// page reads a page of c's history.
function page(c, opts) {
  return c.kind === "room" ? api.roomMessages(c.name, opts) : api.dmMessages(c.name, opts);
}

// loadNewest shows the newest page of c (and whatever arrived live after it).
function loadNewest(c) {
  if (c.loading) return c.loading;
  c.loading = (async () => {
    try {
      const msgs = await page(c, { limit: PAGE });
      resetWith(c, msgs.slice().reverse(), true);
      c.noOlder = msgs.length < PAGE;
      c.loaded = true;
      if (msgs.length) {
        if (c.kind === "room" && msgs[0].pos && posAfter(msgs[0].pos, c.lastPos)) c.lastPos = msgs[0].pos;
        if ((c.latest || "") < msgs[0].id) c.latest = msgs[0].id;
      }
      return msgs;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) authFailed("rejected");
      else note(c, "History is not available right now; showing new messages only.");
      c.loaded = true;
      return null;
    } finally {
      c.loading = null;
      if (c === current) { showConvChrome(); log.scrollTop = log.scrollHeight; }
    }
  })();
  return c.loading;
}

async function loadOlder(c) {
  if (c.loading || c.noOlder || !c.loaded) return;
  const before = oldestId(c);
  if (!before) return;
  c.loading = (async () => {
    try {
      const msgs = await page(c, { before, limit: PAGE });
      const h = log.scrollHeight, top = log.scrollTop;
      const first = c.list.firstElementChild;
      for (const m of msgs) { // newest first: each goes above the previous
        if (c.ids.has(m.id)) continue;
        const li = render(c, m);
        c.list.insertBefore(li, c.list.firstElementChild);
        register(c, li);
      }
      if (msgs.length < PAGE) c.noOlder = true;
      // Bounded: drop the newest when the DOM is full; they reload on scroll down.
      let dropped = false;
      for (let li = c.list.lastElementChild; c.list.children.length > MAX_DOM && li;) {
        const prev = li.previousElementSibling;
        if (li.dataset.id) { unregister(c, li); li.remove(); dropped = true; }
        li = prev;
      }
      if (dropped) c.detached = true;
      if (c === current && first) log.scrollTop = top + (log.scrollHeight - h);
    } catch { /* try again on the next scroll */ }
    finally {
      c.loading = null;
      if (c === current) showConvChrome();
    }
  })();
  return c.loading;
}

async function loadNewer(c) {
  if (c.loading || !c.detached) return;
  const after = newestId(c);
  c.loading = (async () => {
    try {
      const msgs = await page(c, { after, limit: PAGE }); // oldest first
      for (const m of msgs) append(c, m);
      if (msgs.length < PAGE) {
        c.detached = false;
        const buf = c.buffer;
        c.buffer = [];
        for (const ev of buf) append(c, ev);
      }
    } catch { /* try again on the next scroll */ }
    finally {
      c.loading = null;
      if (c === current) showConvChrome();
    }
  })();
  return c.loading;
}

// --- opening, joining, leaving

function showConvChrome() {
  const c = current;
  $("older").hidden = !c || c.noOlder || !c.loaded;
  $("newer").hidden = !c || !c.detached;
  $("leave").hidden = !c || c.kind !== "room";
  $("content").disabled = !c;
  $("send").disabled = !c;
  if (!c) return;
  $("conv-title").textContent = c.kind === "room" ? "# " + c.name : c.name;
  $("content").placeholder = (c.kind === "room" ? `Message #${c.name}` : `Message ${c.name}`) + " (Enter sends, Shift+Enter: new line)";
  $("conv-presence").textContent = c.kind === "dm" ? (c.online === null ? "" : c.online ? "online" : "offline") : "";
  if (c.kind !== "room") $("members").textContent = "";
}

function openConv(c, opts = {}) {
  if (current && current !== c) current.scrollTop = atBottom() ? null : log.scrollTop;
  const prev = current;
  current = c;
  if (prev) updateBadge(prev);
  save("current", c.key);
  $("msgs").replaceWith(c.list);
  c.list.id = "msgs";
  if (prev && prev !== c) prev.list.removeAttribute("id");
  $("composer-error").textContent = "";
  showConvChrome();
  closeSidebar();
  if (!c.loaded && !opts.noLoad) {
    if (c.kind === "dm") loadNewest(c);
    else if (conn && conn.online) startRoom(c);
  }
  log.scrollTop = c.scrollTop === null ? log.scrollHeight : c.scrollTop;
  if (visible()) markRead(c);
  refreshMembers();
  if (c.kind === "dm") refreshPresence();
  if (opts.focus !== false) $("content").focus();
}

// startRoom reads a room's newest page, then joins live from its newest
// position.
async function startRoom(c) {
  if (!c.loaded) {
    const msgs = await loadNewest(c);
    if (msgs) {
      const mark = readMarks[c.key];
      if (!mark) markRead(c);
      else if (c !== current || !visible()) {
        c.unread = msgs.filter((m) => m.id > mark && m.username !== me).length;
        c.mentioned = msgs.filter((m) => m.id > mark && m.username !== me && mentions(m.content, me)).length;
        updateBadge(c);
      }
    }
  }
  sendJoin(c);
}

function sendJoin(c) {
  if (!convs.has(c.key)) return;
  const f = { type: "join", room: c.name, client_id: "join:" + c.name };
  if (c.lastPos) f.since = c.lastPos;
  c.fromNow = !c.lastPos;
  conn.send(f);
}

function joinRoom(name, opts = {}) {
  const c = conv("room", name);
  saveRooms();
  if (!opts.noOpen) openConv(c, opts);
  else if (!c.loaded && conn && conn.online) startRoom(c);
  return c;
}

function leaveRoom(c) {
  conn.send({ type: "leave", room: c.name });
  convs.delete(c.key);
  c.item.remove();
  delete readMarks[c.key];
  save("read", readMarks);
  saveRooms();
  const next = [...convs.values()][0];
  if (next) openConv(next);
  else {
    current = null;
    const empty = el("ol", { class: "msgs", id: "msgs" });
    $("msgs").replaceWith(empty);
    $("conv-title").textContent = "No conversation open";
    $("members").textContent = "";
    showConvChrome();
  }
}

// --- sending

function send(text) {
  const c = current;
  if (!c) return;
  const chars = [...text].length;
  if (!text.trim()) return;
  if (chars > MAX_CHARS) {
    $("composer-error").textContent = `The message is ${chars} characters; the limit is ${MAX_CHARS}.`;
    return;
  }
  $("composer-error").textContent = "";
  if (c.detached) loadNewest(c);
  const cid = crypto.randomUUID();
  const frame = c.kind === "room"
    ? { type: "chat", room: c.name, content: text, client_id: cid }
    : { type: "private", target: c.name, content: text, client_id: cid };
  const o = { frame, key: c.key, li: null, attempt: 0, timer: null, state: "pending", detail: "" };
  outbox.set(cid, o);
  const li = render(c, { type: frame.type, username: me, content: text, client_id: cid, timestamp: new Date().toISOString() });
  c.list.append(li);
  register(c, li);
  trimTop(c);
  log.scrollTop = log.scrollHeight;
  transmit(o);
}

function setOutState(o, state, detail) {
  o.state = state;
  o.detail = detail || "";
  if (o.li) setState(o.li, state, detail);
}

function transmit(o) {
  clearTimeout(o.timer);
  o.timer = null;
  if (conn && conn.send(o.frame)) setOutState(o, o.attempt ? "retrying" : "pending", o.attempt ? "retrying…" : "");
  else setOutState(o, "queued");
}

function retryLater(o, state, delay, detail) {
  setOutState(o, state, detail);
  clearTimeout(o.timer);
  o.timer = setTimeout(() => { o.timer = null; transmit(o); }, delay);
}

function flushOutbox() {
  for (const o of outbox.values()) if (!o.timer) transmit(o);
}

function onAck(f) {
  const o = outbox.get(f.client_id);
  if (!o) return;
  outbox.delete(f.client_id);
  clearTimeout(o.timer);
  setOutState(o, "sent");
  const c = convs.get(o.key);
  if (c && o.li && f.id && !o.li.dataset.id) {
    o.li.dataset.id = f.id;
    c.ids.set(f.id, o.li);
  }
}

function onError(f) {
  const cid = f.client_id || "";
  const msg = f.message || f.code || "error";
  if (cid.startsWith("join:")) {
    const c = convs.get("#" + cid.slice(5));
    if (f.code === "unavailable" && c) { setTimeout(() => conn.online && sendJoin(c), 2000 * (1 + Math.random())); return; }
    if (c) note(c, "Could not join: " + msg);
    if (c === current || !c) $("composer-error").textContent = msg;
    $("join-error").textContent = msg;
    return;
  }
  const o = outbox.get(cid);
  if (!o) { $("composer-error").textContent = msg; return; }
  if (f.code === "unavailable") {
    o.attempt++;
    const delay = Math.min(30000, 1000 * 2 ** (o.attempt - 1)) * (0.75 + Math.random() * 0.5);
    retryLater(o, "retrying", delay, `not sent yet: retrying in ${Math.ceil(delay / 1000)} s`);
  } else if (f.code === "rate_limited") {
    o.attempt++;
    retryLater(o, "waiting", 1000 + Math.random() * 1000, "slowed down: retrying…");
  } else {
    outbox.delete(cid);
    clearTimeout(o.timer);
    setOutState(o, "failed", "not sent");
    if (o.key === (current && current.key)) $("composer-error").textContent = msg;
    else $("composer-error").textContent = `${o.key}: ${msg}`;
  }
}

// --- frames from the socket

function onFrame(f) {
  switch (f.type) {
    case "welcome":
      if (f.username && f.username !== me) { me = f.username; $("me").textContent = me; }
      onOnline();
      break;
    case "joined": {
      const c = convs.get("#" + f.room);
      if (!c) break;
      c.joined = true;
      if (c.fromNow) {
        // Joined without a position (the room's history was empty or not
        // available): whatever was appended between reading history and
        // joining is only in history, which lags the log by up to a second.
        c.fromNow = false;
        setTimeout(() => { if (convs.get(c.key) === c && !c.detached) loadNewest(c); }, 1500);
      }
      if (f.recovered === false) {
        note(c, "Back after a long gap: some messages may only be in history. Showing the newest.");
        c.loaded = false;
        loadNewest(c);
      }
      if (c === current) refreshMembers();
      break;
    }
    case "left": break;
    case "chat":
    case "system": {
      if (!f.room) { broadcast(f); break; }
      const c = convs.get("#" + f.room);
      if (c) live(c, f);
      break;
    }
    case "private": {
      const peer = f.username === me ? f.target : f.username;
      if (!peer) break;
      const c = conv("dm", peer);
      if (f.id && dmCursor < f.id) dmCursor = f.id;
      live(c, f);
      bumpDM(c);
      break;
    }
    case "leave":
      if (current && current.kind === "room" && current.name === f.room) refreshMembers();
      break;
    case "ack": onAck(f); break;
    case "error": onError(f); break;
  }
}

function broadcast(f) {
  if (f.id && seenBroadcasts.has(f.id)) return;
  if (f.id) seenBroadcasts.add(f.id);
  if (seenBroadcasts.size > 200) seenBroadcasts.delete(seenBroadcasts.values().next().value);
  $("announcement-text").textContent = `${f.content || ""}`;
  $("announcement").hidden = false;
}

// onOnline resumes every room (with since), catches up on private
// messages, and sends what was queued.
function onOnline() {
  for (const c of convs.values()) {
    if (c.kind !== "room") continue;
    c.joined = false;
    if (c.loaded) sendJoin(c);
    else startRoom(c);
  }
  syncDMs();
  flushOutbox();
  refreshMembers();
  refreshPresence();
}

// syncDMs lists conversations with news since the newest private message
// seen (history lags the log by up to a second, so it runs twice).
async function syncDMs(again = true) {
  let list;
  try {
    list = await api.conversations(dmCursor || undefined);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) authFailed("rejected");
    return;
  }
  for (const x of list) {
    const c = conv("dm", x.peer);
    if (x.latest && (c.latest || "") < x.latest.id) c.latest = x.latest.id;
    if (x.latest && dmCursor < x.latest.id) dmCursor = x.latest.id;
    if (c.loaded) {
      // Page forward from what is shown.
      const after = newestId(c);
      try {
        const msgs = after ? await api.dmMessages(c.name, { after, limit: 200 }) : [];
        for (const m of msgs) live(c, m);
      } catch { /* next sync */ }
    } else {
      await countHistoryUnread(c, x.latest);
    }
  }
  for (const x of list.slice().reverse()) bumpDM(conv("dm", x.peer));
  refreshPresence();
  if (again) setTimeout(() => conn && conn.online && syncDMs(false), 1500);
}

// countHistoryUnread sets the unread count of a conversation not shown yet
// from its history after the read mark.
async function countHistoryUnread(c, latest) {
  const mark = readMarks[c.key] || "";
  if (!latest || latest.id <= mark || c === current) return;
  try {
    const msgs = await api.dmMessages(c.name, mark ? { after: mark, limit: 200 } : { limit: 200 });
    const theirs = msgs.filter((m) => m.username !== me && m.id > mark);
    c.unread = theirs.length;
    c.mentioned = theirs.filter((m) => mentions(m.content, me)).length;
    updateBadge(c);
  } catch { /* keep the old count */ }
}

// --- presence

let membersTimer = null, presenceTimer = null;

async function refreshMembers() {
  clearTimeout(membersTimer);
  membersTimer = setTimeout(refreshMembers, 5000);
  const c = current;
  if (!c || c.kind !== "room" || !conn || !conn.online || !visible()) return;
  try {
    const members = await api.members(c.name);
    if (c !== current) return;
    $("members").textContent = members.length ? "Online here: " + members.slice().sort().join(", ") : "";
  } catch {
    if (c === current) $("members").textContent = "";
  }
}

async function refreshPresence() {
  clearTimeout(presenceTimer);
  presenceTimer = setTimeout(refreshPresence, 15000);
  const peers = [...convs.values()].filter((c) => c.kind === "dm").map((c) => c.name).slice(0, 100);
  if (!peers.length || !conn || !conn.online) return;
  try {
    const users = await api.presence(peers);
    for (const u of users) {
      const c = convs.get("@" + u.user);
      if (!c) continue;
      c.online = !!u.online;
      updateBadge(c);
    }
    if (current && current.kind === "dm") showConvChrome();
  } catch { /* the dots keep their last state */ }
}

// --- search

async function search(q) {
  const results = $("results");
  $("search-results").hidden = false;
  $("results-note").textContent = "Searching…";
  results.replaceChildren();
  let msgs;
  try {
    msgs = await api.search(q);
  } catch (e) {
    $("results-note").textContent = e instanceof ApiError && e.code === "invalid_query" ? "That search cannot be read: " + e.message : "Search is not available right now.";
    return;
  }
  $("results-note").textContent = msgs.length ? `${msgs.length} result${msgs.length === 1 ? "" : "s"}` : "Nothing found.";
  for (const m of msgs) {
    const where = m.room ? "# " + m.room : (m.username === me ? m.target : m.username);
    const b = el("button", { type: "button", class: "result" },
      el("span", { class: "where", text: where }),
      el("span", { class: "user", text: (m.username || "") + ": " }),
      el("span", { class: "text", text: m.content || "" }),
      el("span", { class: "when", text: new Date(m.timestamp).toLocaleString() }));
    b.addEventListener("click", () => openAt(m));
    results.append(el("li", {}, b));
  }
  const first = results.querySelector("button");
  if (first) first.focus();
}

// openAt opens a result's conversation at that message, with a page of
// context on either side.
async function openAt(m) {
  const c = m.room ? joinRoom(m.room, { noOpen: true }) : conv("dm", m.username === me ? m.target : m.username);
  openConv(c, { noLoad: true, focus: false });
  $("search-results").hidden = true;
  try {
    if (c.loading) await c.loading;
    const half = 25;
    const [before, after] = await Promise.all([page(c, { before: m.id, limit: half }), page(c, { after: m.id, limit: half })]);
    const newer = after.length < half; // the page reaches the newest message
    if (!newer) c.detached = true;
    resetWith(c, [...before.reverse(), m, ...after], newer);
    c.noOlder = before.length < half;
    c.loaded = true;
    if (c.kind === "room" && !c.joined && conn.online) sendJoin(c);
  } catch {
    note(c, "Could not load the messages around this result.");
  }
  showConvChrome();
  const li = c.ids.get(m.id);
  if (li) {
    for (const x of c.list.querySelectorAll(".target")) x.classList.remove("target");
    li.classList.add("target");
    li.tabIndex = -1;
    li.scrollIntoView({ block: "center" });
    li.focus();
  }
}

// --- connection banner and sign-in

function onState(s) {
  document.body.dataset.conn = s.state;
  clearInterval(countdown);
  const banner = $("banner"), text = $("banner-text");
  $("retry").hidden = s.state !== "waiting";
  if (s.state === "online") { banner.hidden = true; return; }
  banner.hidden = false;
  if (s.state === "connecting") text.textContent = "Connecting…";
  else if (s.state === "checking") text.textContent = "Disconnected: checking the server…";
  else if (s.state === "waiting") {
    const tick = () => {
      const left = Math.max(0, Math.ceil((s.nextAt - Date.now()) / 1000));
      text.textContent = `Disconnected${s.detail ? ": " + s.detail : ""}. Reconnecting in ${left} s.`;
    };
    tick();
    countdown = setInterval(tick, 1000);
  }
  for (const o of outbox.values()) if (!o.timer && o.state !== "queued") setOutState(o, "queued");
}

function authFailed(reason) {
  if (conn) conn.stop();
  conn = null;
  clearTimeout(expiryTimer);
  clearInterval(countdown);
  sessionStorage.removeItem("chat.token");
  showSignin(reason === "expired"
    ? "Your sign-in has expired. Get a new link to continue."
    : "The server did not accept this sign-in (the token is invalid, expired or from another server). Get a new link.");
}

function showSignin(reason) {
  document.body.dataset.conn = "signin";
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-reason").textContent = reason || "";
  document.title = "Sign in · chat";
  $("signin-token").focus();
}

function signOut() {
  if (conn) conn.stop();
  conn = null;
  sessionStorage.removeItem("chat.token");
  location.hash = "";
  location.reload();
}

function start() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    sessionStorage.setItem("chat.token", fromHash);
    history.replaceState(null, "", location.pathname + location.search);
  }
  token = sessionStorage.getItem("chat.token") || "";
  if (!token) return showSignin("");
  const claims = decodeToken(token);
  if (!claims || !claims.sub) {
    sessionStorage.removeItem("chat.token");
    return showSignin("That is not a sign-in token. Get a new link.");
  }
  if (claims.exp && Date.now() >= claims.exp - 1000) return authFailed("expired");
  me = claims.sub;
  $("me").textContent = me;
  $("signin").hidden = true;
  $("app").hidden = false;
  api = new Api(() => token);
  readMarks = load("read", {});
  for (const r of load("rooms", ["general"])) if (ROOM_RE.test(r)) conv("room", r);
  const saved = convs.get(load("current", "")) || [...convs.values()][0];
  conn = new Connection({ token, exp: claims.exp, user: me, api, onFrame, onState, onAuthFailed: authFailed });
  if (claims.exp) {
    const wait = claims.exp - Date.now();
    if (wait < 2 ** 31 - 1) expiryTimer = setTimeout(() => authFailed("expired"), wait);
  }
  if (saved) openConv(saved, { noLoad: true });
  else showConvChrome();
  conn.start();
}

// --- controls

function closeSidebar() {
  $("sidebar").classList.remove("open");
  $("menu").setAttribute("aria-expanded", "false");
}

function wire() {
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = $("signin-token").value.trim();
    if (!t) return;
    sessionStorage.setItem("chat.token", t);
    location.hash = "";
    location.reload();
  });
  $("signout").addEventListener("click", signOut);
  $("retry").addEventListener("click", () => conn && conn.retryNow());
  $("announcement-close").addEventListener("click", () => { $("announcement").hidden = true; });
  $("menu").addEventListener("click", () => {
    const open = $("sidebar").classList.toggle("open");
    $("menu").setAttribute("aria-expanded", String(open));
    if (open) $("sidebar").querySelector("button, input").focus();
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      if ($("sidebar").classList.contains("open")) { closeSidebar(); $("menu").focus(); }
      else if (!$("search-results").hidden) { $("search-results").hidden = true; $("search-q").focus(); }
    }
  });
  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("join-room").value.trim();
    if (!ROOM_RE.test(name)) {
      $("join-error").textContent = "Room names are 1 to 64 characters: lowercase letters, digits, - and _, starting with a letter or digit.";
      $("join-room").setAttribute("aria-invalid", "true");
      return;
    }
    $("join-error").textContent = "";
    $("join-room").removeAttribute("aria-invalid");
    $("join-room").value = "";
    joinRoom(name);
  });
  $("dm-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("dm-user").value.trim().replace(/^@/, "");
    if (!USER_RE.test(name)) {
      $("dm-error").textContent = "Usernames are 1 to 64 characters: letters, digits, ., - and _, starting with a letter or digit.";
      $("dm-user").setAttribute("aria-invalid", "true");
      return;
    }
    $("dm-error").textContent = "";
    $("dm-user").removeAttribute("aria-invalid");
    $("dm-user").value = "";
    openConv(conv("dm", name));
  });
  $("leave").addEventListener("click", () => current && current.kind === "room" && leaveRoom(current));
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = $("content").value;
    if (!t.trim()) return;
    $("content").value = "";
    send(t);
  });
  $("content").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("search-q").value.trim();
    if (q) search(q);
  });
  $("search-close").addEventListener("click", () => { $("search-results").hidden = true; $("search-q").focus(); });
  $("older").addEventListener("click", () => current && loadOlder(current));
  $("newer").addEventListener("click", () => current && loadNewest(current));
  log.addEventListener("scroll", () => {
    if (!current) return;
    if (log.scrollTop < 60) loadOlder(current);
    if (current.detached && log.scrollTop + log.clientHeight >= log.scrollHeight - 60) loadNewer(current);
    if (atBottom() && visible()) markRead(current);
  });
  document.addEventListener("visibilitychange", () => {
    if (!visible()) return;
    if (current) markRead(current);
    refreshMembers();
  });
  window.addEventListener("online", () => conn && conn.retryNow());
}

wire();
start();
