// The browser client: rooms, direct messages, unread counts, search and
// presence over one WebSocket plus the history and presence HTTP APIs.
// Every user-provided string is rendered as text (see render.js).

import { Api, ApiError, decodeToken, ROOM_RE, USER_RE, POS_RE } from "./api.js";
import { Connection } from "./conn.js";
import { messageElement, setState, el, mentions, setContent, markDeleted, lockIcon } from "./render.js";

const PAGE = 50;        // messages per history page
const MAX_DOM = 300;    // messages kept in the DOM per conversation
const MAX_BUFFER = 500; // live events held while a conversation shows older history
const MAX_CHARS = 4000; // the edge's content limit (characters)
const TYPING_EVERY = 3000; // least time between two typing notices sent per conversation
const TYPING_SHOWN = 5000; // how long a typing notice shows (chatevent.TypingTTL)

const $ = (id) => document.getElementById(id);

let token = "", me = "", admin = false, api = null, conn = null, expiryTimer = null;
const convs = new Map();  // "#room" or "@peer" -> conversation
// The outbox: client_id -> {frame, key, li, attempt, state, detail, ts,
// inflight, failed}, in the order written. Each conversation's messages go
// out one at a time, in that order (the next once the previous is acked or
// refused), so the log holds them in the order they were written.
const outbox = new Map();
const holds = new Map();  // conversation key -> timer: its queue waits (rate_limited, unavailable)
const seenBroadcasts = new Set();
let current = null;       // the open conversation
let readMarks = {};       // key -> id of the newest message read
let dmCursor = "";        // newest private message id seen
let countdown = null;
let readPos = {};         // key -> pos of the newest message read (sent in read frames)
let peerReads = {};       // "@peer" -> the peer's read position ("Seen" survives a reload while history lags)
let blocked = new Set();  // users the signed-in user blocks
let serverUnread = new Map(); // key -> {unread, last_read} from GET /v1/unread
let unreadReady = Promise.resolve();
const ops = new Map();    // client_id -> {kind: "edit"|"delete", c, li, id, content}

// --- per-user storage: joined rooms and read positions survive reloads.
function load(k, def) {
  try { return JSON.parse(localStorage.getItem(`chat:${me}:${k}`)) ?? def; } catch { return def; }
}
function save(k, v) {
  try { localStorage.setItem(`chat:${me}:${k}`, JSON.stringify(v)); } catch { /* storage full or off */ }
}
const saveRooms = () => save("rooms", [...convs.values()].filter((c) => c.kind === "room" && c.member).map((c) => c.name));

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
    // conversations (docs/conversations.md)
    member: kind === "room", // remembered as joined (a listed room is not until opened)
    private: false, role: "", owner: "", muted: false, revoked: false, notice: "",
    readPos: readPos[key] || "", peerRead: kind === "dm" && POS_RE.test(peerReads[key] || "") ? peerReads[key] : "", typers: new Map(), typingNext: 0, typingTimer: null, sentSinceTyping: false,
  };
  convs.set(key, c);
  sidebarItem(c);
  return c;
}

function sidebarItem(c) {
  const name = el("span", { class: "name", dir: "auto", text: c.kind === "room" ? "# " + c.name : c.name });
  // The button's label carries the count: the badge is for the eye.
  const unread = el("span", { class: "unread", "aria-hidden": "true" });
  const btn = el("button", { type: "button", class: "open" });
  if (c.kind === "dm") btn.append(el("span", { class: "dot", "aria-hidden": "true" }));
  btn.append(name);
  if (c.kind === "room") btn.append(lockIcon(true));
  btn.append(unread);
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
  const lock = c.item.querySelector(".lock");
  if (lock) lock.hidden = !c.private;
  c.item.classList.toggle("not-member", c.kind === "room" && !c.member);
  c.item.classList.toggle("revoked", !!c.revoked);
  const label = (c.kind === "room" ? (c.private ? "private room " : "room ") : "conversation with ") + c.name +
    (c.kind === "room" && !c.member ? (c.revoked ? ", no longer a member" : ", not joined") : "") +
    (c.unread ? `, ${c.unread} unread` + (c.mentioned ? ", mentions you" : "") : "") +
    (c.kind === "dm" ? (c.online ? ", online" : ", offline") + (blocked.has(c.name) ? ", blocked" : "") : "");
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
  sendRead(c);
}

// newestPos is the log position of the newest message c shows.
function newestPos(c) {
  for (let li = c.list.lastElementChild; li; li = li.previousElementSibling) if (li.dataset.pos) return li.dataset.pos;
  return "";
}

// sendRead tells the server how far c is read (a read frame) when c is the
// open conversation, the page is visible and scrolled to the newest
// message, and the position moves forward. Reads count against the user's
// message rate: at most one per conversation a second goes out, with the
// newest position (a busy room read live sends one a second, not one per
// message).
const READ_EVERY = 1000;
function sendRead(c) {
  // (The socket may be down: flushRead keeps the position for onOnline.)
  if (c !== current || !visible() || c.detached || !c.loaded || !atBottom() || !conn) return;
  if (c.kind === "room" && !c.member) return;
  const pos = newestPos(c);
  if (!pos || (c.readPos && !posAfter(pos, c.readPos))) return;
  if (onlyMineAfter(c, c.readPos)) return; // nothing of others' to mark (reads cost the message rate)
  if (!c.readWant || posAfter(pos, c.readWant)) c.readWant = pos;
  flushRead(c);
}

// flushRead sends c's wanted read position, at most once a READ_EVERY
// (later, when the last one went out less than that ago: the position read
// by then, even if the user has moved on to another conversation).
function flushRead(c) {
  const wait = (c.readSentAt || 0) + READ_EVERY - Date.now();
  if (wait > 0) {
    if (!c.readTimer) c.readTimer = setTimeout(() => { c.readTimer = null; flushRead(c); }, wait);
    return;
  }
  const pos = c.readWant;
  if (!pos || (c.readPos && !posAfter(pos, c.readPos))) { c.readWant = ""; return; }
  if (!conn || !conn.online) return; // kept: onOnline sends it
  const f = c.kind === "room" ? { type: "read", room: c.name, pos } : { type: "read", target: c.name, pos };
  if (!conn.send(f)) return;
  c.readWant = "";
  c.readPrev = c.readPos; // what readRefused puts back
  c.readSentAt = Date.now();
  lastRead = c;
  c.readPos = pos;
  readPos[c.key] = pos;
  save("readpos", readPos);
}

// readRefused undoes the read sent last (the server answers frames in
// order, so an error without a client_id is about the last read it got)
// and sends it again later.
let lastRead = null;
function readRefused() {
  const c = lastRead;
  lastRead = null;
  if (!c || Date.now() - c.readSentAt > 5000) return;
  if (!c.readWant || posAfter(c.readPos, c.readWant)) c.readWant = c.readPos;
  c.readPos = c.readPrev;
  if (c.readPos) readPos[c.key] = c.readPos;
  else delete readPos[c.key];
  save("readpos", readPos);
  clearTimeout(c.readTimer);
  c.readTimer = setTimeout(() => { c.readTimer = null; flushRead(c); }, 1500 + Math.random() * 1000);
}

// onlyMineAfter tells whether every message c shows after log position
// after is the user's own.
function onlyMineAfter(c, after) {
  for (let li = c.list.lastElementChild; li; li = li.previousElementSibling) {
    if (!li.dataset.pos) continue;
    if (after && !posAfter(li.dataset.pos, after)) break;
    if (li.dataset.user !== me) return false;
  }
  return true;
}

// posAfter tells whether log position a ("p:o") is after b.
function posAfter(a, b) {
  if (!b) return true;
  const [pa, oa] = a.split(":").map(Number), [pb, ob] = b.split(":").map(Number);
  return pa !== pb ? true : oa > ob;
}

const log = $("log");
const atBottom = () => log.scrollTop + log.clientHeight >= log.scrollHeight - 8;

// The log follows the newest message while the reader is at the bottom.
// When the log itself gets shorter (the members line appears above it, the
// window shrinks) no scroll happens, so it stays pinned: it was at the
// bottom at the last scroll, and is put back there.
let pinned = true;
let lastScrollTop = 0;
new ResizeObserver(() => {
  if (pinned && !atBottom()) log.scrollTop = log.scrollHeight;
}).observe(log);

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
  if (ev.username === me && isMessage(ev) && !ev.deleted) {
    const o = ev.client_id && outbox.get(ev.client_id);
    if (o) {
      o.li = li;
      setState(li, o.state, o.detail);
      if (o.failed) unsentActions(li);
    } else setState(li, "sent");
  }
  decorate(c, li);
  return li;
}

// isMessage tells a message someone wrote (chat, private) from the other
// events a conversation's log holds (announcements, presence notes).
const isMessage = (ev) => ev.type === "chat" || ev.type === "private";
// countsUnread tells the events an unread count counts: messages and
// announcements, not presence notes.
const countsUnread = (ev) => isMessage(ev) || ev.type === "system";

// mayModerate tells whether the user may delete others' messages in c.
const mayModerate = (c) => c.kind === "room" && (admin || c.role === "owner" || c.role === "mod");

// decorate gives li the actions the user may take on it: Edit and Delete on
// their own messages, Delete on others' in a room they moderate. (The
// actions of a message still pending show once it has an id.)
function decorate(c, li) {
  const old = li.querySelector(":scope > .head > .actions");
  if (old) old.remove();
  const head = li.querySelector(":scope > .head");
  if (!head || !li.dataset.user || li.classList.contains("deleted") || li.classList.contains("announcement")) return;
  if (c.kind === "room" && c.revoked) return; // no longer a member: nothing to change here
  const mine = li.dataset.user === me;
  if (!mine && !mayModerate(c)) return;
  const who = mine ? "your message" : `the message from ${li.dataset.user}`;
  const box = el("span", { class: "actions" });
  if (mine) box.append(el("button", { type: "button", class: "act", "data-act": "edit", "aria-label": `Edit ${who}`, text: "Edit" }));
  box.append(el("button", { type: "button", class: "act", "data-act": "delete", "aria-label": `Delete ${who}`, text: "Delete" }));
  head.append(box);
}

function redecorate(c) {
  for (const li of c.list.children) decorate(c, li);
}

// seen reports whether c already shows ev (by id, or by sender and
// client_id), upgrading one of the user's pending messages in place.
function seen(c, ev) {
  if (ev.id && c.ids.has(ev.id)) {
    const li = c.ids.get(ev.id);
    if (ev.pos && !li.dataset.pos) {
      li.dataset.pos = ev.pos;
      placeByPos(c, li); // one of the user's own, acked before its echo came
    }
    return true;
  }
  const li = ev.client_id && ev.username && c.cids.get(cidKey(ev.username, ev.client_id));
  if (li) {
    const placed = ev.pos && !li.dataset.pos && (!li.dataset.id || li.dataset.id === ev.id);
    if (placed) li.dataset.pos = ev.pos;
    if (ev.username === me && !li.dataset.id && ev.id) {
      li.dataset.id = ev.id;
      c.ids.set(ev.id, li);
      if (!placed) c.list.append(li); // the log's order, not the order of typing
    }
    if (placed) placeByPos(c, li);
    return true;
  }
  return false;
}

// placeByPos moves li (one of the user's own messages, which showed where
// it was written) to its place in the log's order: after the newest shown
// event at or before its position. Messages still pending stay after it.
function placeByPos(c, li) {
  const pos = li.dataset.pos;
  if (!pos || li.parentNode !== c.list) return;
  const part = pos.split(":")[0];
  for (let x = c.list.lastElementChild; x; x = x.previousElementSibling) {
    if (x === li || !x.dataset.pos) continue;
    if (x.dataset.pos.split(":")[0] !== part) return; // another partition: no order to follow
    if (!posAfter(x.dataset.pos, pos)) {
      if (x.nextElementSibling !== li) x.after(li);
      return;
    }
  }
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
  const stick = c === current && (atBottom() || pinned);
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
  if (c.kind === "dm") {
    bumpDM(c);
    if (c.peerRead && ev.username === me) showSeen(c); // a message of mine read before it reached this page
  }
  if (ev.username && c.typers.has(ev.username)) stopTyping(c, ev.username);
}

function countUnread(c, ev) {
  if (ev.username === me || ev.deleted || !countsUnread(ev)) return;
  if (c === current && visible()) { markRead(c); return; }
  if (ev.id && ev.id <= (readMarks[c.key] || "")) return;
  if (ev.pos && c.readPos && !posAfter(ev.pos, c.readPos)) return; // read here or on another device
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
// With soft (a load while the socket is down), a failure leaves c not
// loaded, for the join to load it once online.
function loadNewest(c, { soft = false } = {}) {
  if (c.loading) return c.loading;
  c.loading = (async () => {
    try {
      const msgs = await page(c, { limit: PAGE });
      resetWith(c, msgs.slice().reverse(), true);
      if (c.peerRead) showSeen(c);
      c.noOlder = msgs.length < PAGE;
      c.loaded = true;
      if (msgs.length) {
        if (c.kind === "room" && msgs[0].pos && posAfter(msgs[0].pos, c.lastPos)) c.lastPos = msgs[0].pos;
        if ((c.latest || "") < msgs[0].id) c.latest = msgs[0].id;
      }
      return msgs;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        // No messages yet (or a room this user may not read: the join says).
        resetWith(c, [], true);
        c.noOlder = true;
        c.loaded = true;
        return [];
      }
      if (e instanceof ApiError && e.status === 401) authFailed("rejected");
      else if (soft) return null;
      else note(c, "History is not available right now; showing new messages only.");
      c.loaded = true;
      return null;
    } finally {
      c.loading = null;
      if (c === current) {
        showConvChrome();
        log.scrollTop = log.scrollHeight;
        if (visible()) sendRead(c);
      }
    }
  })();
  return c.loading;
}

// reloadNewest is loadNewest after whatever load is in flight.
async function reloadNewest(c) {
  if (c.loading) { try { await c.loading; } catch { /* loaded again below */ } }
  return loadNewest(c);
}

// anchorOf remembers where a message the reader sees is: the first one
// visible (fromEnd: the last), which a change at the other end keeps.
function anchorOf(c, fromEnd) {
  if (c !== current) return null;
  const box = log.getBoundingClientRect();
  const items = [...c.list.children];
  if (fromEnd) items.reverse();
  for (const li of items) {
    const r = li.getBoundingClientRect();
    if (r.height && (fromEnd ? r.top < box.bottom : r.bottom > box.top)) return { li, top: r.top - box.top };
  }
  return null;
}

// keepAnchor scrolls so that the anchor is where it was: the reader's
// place survives messages added and dropped above it.
function keepAnchor(a) {
  if (!a || !a.li.isConnected || a.li.parentNode !== (current && current.list)) return;
  const moved = a.li.getBoundingClientRect().top - log.getBoundingClientRect().top - a.top;
  if (moved) log.scrollTop += moved;
}

async function loadOlder(c) {
  if (c.loading || c.noOlder || !c.loaded) return;
  const before = oldestId(c);
  if (!before) return;
  c.loading = (async () => {
    let anchor = null;
    try {
      const msgs = await page(c, { before, limit: PAGE });
      anchor = anchorOf(c, false);
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
        if (li.dataset.id && li !== (anchor && anchor.li)) { unregister(c, li); li.remove(); dropped = true; }
        li = prev;
      }
      if (dropped) c.detached = true;
    } catch { /* try again on the next scroll */ }
    finally {
      c.loading = null;
      if (c === current) {
        showConvChrome(); // the buttons above and below the messages
        keepAnchor(anchor);
      }
    }
  })();
  return c.loading;
}

// addNewer shows ev at the end of c unless it is shown (no scrolling).
function addNewer(c, ev) {
  if (seen(c, ev)) return;
  const li = render(c, ev);
  c.list.append(li);
  register(c, li);
}

async function loadNewer(c) {
  if (c.loading || !c.detached) return;
  const after = newestId(c);
  c.loading = (async () => {
    let anchor = null;
    try {
      const msgs = await page(c, { after, limit: PAGE }); // oldest first
      anchor = anchorOf(c, true);
      for (const m of msgs) addNewer(c, m);
      if (msgs.length < PAGE) {
        c.detached = false;
        const buf = c.buffer;
        c.buffer = [];
        for (const ev of buf) addNewer(c, ev);
      }
      // Bounded: drop the oldest, above the reader's place.
      while (c.list.children.length > MAX_DOM && c.list.firstElementChild !== (anchor && anchor.li)) {
        const li = c.list.firstElementChild;
        unregister(c, li);
        li.remove();
        c.noOlder = false;
      }
    } catch { /* try again on the next scroll */ }
    finally {
      c.loading = null;
      if (c === current) {
        showConvChrome(); // the buttons above and below the messages
        keepAnchor(anchor);
      }
    }
  })();
  return c.loading;
}

// --- opening, joining, leaving

// closedReason tells why the user may not write in c ("" when they may):
// removed or banned, refused at the join (private, or banned), or muted.
function closedReason(c) {
  if (!c || c.kind !== "room") return "";
  if (c.revoked) return c.notice || `You are no longer a member of #${c.name}: you cannot read or write here any more.`;
  if (c.refused) return c.notice || `You may not join #${c.name}.`;
  if (c.muted) return c.notice || `You are muted in #${c.name}: you can read but not write here.`;
  return "";
}

function showConvChrome() {
  const c = current;
  $("older").hidden = !c || c.noOlder || !c.loaded;
  $("newer").hidden = !c || !c.detached;
  $("leave").hidden = !c || c.kind !== "room";
  $("details").hidden = !c || c.kind !== "room";
  $("block").hidden = !c || c.kind !== "dm" || c.name === me;
  const closed = closedReason(c);
  $("content").disabled = !c || !!closed;
  $("send").disabled = !c || !!closed;
  if (!$("panel").hidden && (!c || c.kind !== "room" || c.name !== panelRoom)) closePanel(false);
  showTyping();
  if (!c) { $("conv-notice").textContent = ""; return; }
  $("conv-title").textContent = c.kind === "room" ? "# " + c.name : c.name;
  $("content").placeholder = closed
    ? (c.muted && !c.revoked && !c.refused ? "You are muted here: you can read but not write." : "You cannot write here: you are not a member.")
    : (c.kind === "room" ? `Message #${c.name}` : `Message ${c.name}`) + " (Enter sends, Shift+Enter: new line)";
  if (c.kind === "room" && c.private) $("conv-presence").replaceChildren(lockIcon(), " private room");
  else $("conv-presence").textContent = c.kind === "dm" ? (c.online === null ? "" : c.online ? "online" : "offline") : "";
  if (c.kind !== "room") $("members").textContent = "";
  if (c.kind === "dm") {
    const isBlocked = blocked.has(c.name);
    $("block").textContent = isBlocked ? "Unblock" : "Block";
    $("block").setAttribute("aria-label", (isBlocked ? "Unblock " : "Block ") + c.name);
    $("block").setAttribute("aria-pressed", String(isBlocked));
  }
  $("conv-notice").textContent = c.notice || closed ||
    (c.kind === "dm" && blocked.has(c.name) ? `You block ${c.name}: their messages to you are refused.` : "");
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
  // Opening a listed room that is not joined yet joins it (not one the
  // user was removed or banned from: the join form does that).
  let rejoin = false;
  if (c.kind === "room" && !c.member && !c.revoked) {
    c.member = true;
    c.notice = "";
    saveRooms();
    updateBadge(c);
    rejoin = true;
  }
  showConvChrome();
  closeSidebar();
  if (!c.loaded && !opts.noLoad) {
    if (c.kind === "dm") loadNewest(c);
    else if (conn && conn.online) startRoom(c);
  } else if (rejoin && conn && conn.online) sendJoin(c);
  log.scrollTop = c.scrollTop === null ? log.scrollHeight : c.scrollTop;
  pinned = atBottom(); // this conversation's own position, not the last one's
  lastScrollTop = log.scrollTop;
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
    await unreadReady;
    if (msgs && c.serverCounted && c.unread && c !== current) {
      // The server counts unread messages, not mentions: the page read shows them.
      markMentions(c, msgs);
    }
    if (msgs && !c.serverCounted) {
      const mark = readMarks[c.key];
      if (!mark) markRead(c);
      else if (c !== current || !visible()) {
        const theirs = msgs.filter((m) => m.id > mark && countsUnread(m) && m.username !== me && !m.deleted);
        c.unread = theirs.length;
        c.mentioned = theirs.filter((m) => mentions(m.content, me)).length;
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
  const wasOut = !c.member || c.revoked;
  c.member = true;
  if (wasOut) {
    c.revoked = false;
    c.notice = "";
    updateBadge(c);
  }
  saveRooms();
  if (!opts.noOpen) openConv(c, opts);
  else if (!c.loaded && conn && conn.online) startRoom(c);
  if (wasOut && c.loaded && !c.joined && conn && conn.online) sendJoin(c);
  return c;
}

function leaveRoom(c) {
  conn.send({ type: "leave", room: c.name });
  // Leaving is final: what was still to be sent there, or refused, goes.
  for (const [cid, o] of outbox) if (o.key === c.key) outbox.delete(cid);
  clearTimeout(holds.get(c.key));
  holds.delete(c.key);
  saveOutbox();
  convs.delete(c.key);
  c.item.remove();
  delete readMarks[c.key];
  save("read", readMarks);
  saveRooms();
  if (panelRoom === c.name) closePanel(false);
  const next = [...convs.values()].find((x) => x.kind === "dm" || x.member);
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

// send queues text as a message of the open conversation; it answers
// false, keeping nothing, when there is none or the text cannot be sent.
function send(text) {
  const c = current;
  if (!c) return false;
  const chars = [...text].length;
  if (!text.trim()) return false;
  if (closedReason(c)) return false;
  if (chars > MAX_CHARS) {
    $("composer-error").textContent = `The message is ${chars} characters; the limit is ${MAX_CHARS}.`;
    return false;
  }
  $("composer-error").textContent = "";
  if (c.detached) loadNewest(c);
  // The others stop showing the notice when the message arrives: typing
  // on is announced again as soon as the rate allows.
  c.sentSinceTyping = true;
  const cid = crypto.randomUUID();
  const frame = c.kind === "room"
    ? { type: "chat", room: c.name, content: text, client_id: cid }
    : { type: "private", target: c.name, content: text, client_id: cid };
  const o = { frame, key: c.key, li: null, attempt: 0, state: "pending", detail: "", ts: new Date().toISOString(), inflight: false, failed: false };
  outbox.set(cid, o);
  saveOutbox();
  showPending(c, o);
  log.scrollTop = log.scrollHeight;
  pump(c.key);
  return true;
}

// showPending shows one of the outbox's messages at the end of c.
function showPending(c, o) {
  const f = o.frame;
  const li = render(c, { type: f.type, username: me, content: f.content, client_id: f.client_id, room: f.room, target: f.target, timestamp: o.ts });
  c.list.append(li);
  register(c, li);
  trimTop(c);
}

// The outbox is kept in sessionStorage: a message written while offline
// survives a reload of the tab and goes out once (same client_id) when the
// page is back online; one the server refused stays, for the writer to
// retry, edit or dismiss.
const OUTBOX_MAX_AGE = 24 * 3600 * 1000;
function saveOutbox() {
  const list = [...outbox.values()].map((o) => ({ frame: o.frame, key: o.key, ts: o.ts, failed: o.failed || undefined, detail: o.failed ? o.detail : undefined }));
  try {
    if (list.length) sessionStorage.setItem(`chat:${me}:outbox`, JSON.stringify(list));
    else sessionStorage.removeItem(`chat:${me}:outbox`);
  } catch { /* storage full or off: the queue lives as long as the page */ }
}

function restoreOutbox() {
  let list;
  try { list = JSON.parse(sessionStorage.getItem(`chat:${me}:outbox`) || "[]"); } catch { list = []; }
  if (!Array.isArray(list)) return;
  for (const x of list) {
    const f = x && x.frame;
    if (!f || typeof f.client_id !== "string" || typeof f.content !== "string" || outbox.has(f.client_id)) continue;
    if (!(Date.now() - Date.parse(x.ts) < OUTBOX_MAX_AGE)) continue;
    let c = null;
    // Only rooms still in the sidebar: a room left is not joined again.
    if (f.type === "chat" && ROOM_RE.test(f.room || "")) c = convs.get("#" + f.room) || null;
    else if (f.type === "private" && USER_RE.test(f.target || "")) c = conv("dm", f.target);
    if (!c) continue;
    const frame = f.type === "chat"
      ? { type: "chat", room: f.room, content: f.content, client_id: f.client_id }
      : { type: "private", target: f.target, content: f.content, client_id: f.client_id };
    const failed = x.failed === true;
    const o = { frame, key: c.key, li: null, attempt: 0, state: failed ? "failed" : "queued", detail: failed && typeof x.detail === "string" ? x.detail : "", ts: x.ts, inflight: false, failed };
    outbox.set(frame.client_id, o);
    showPending(c, o);
  }
  saveOutbox();
}

function setOutState(o, state, detail) {
  o.state = state;
  o.detail = detail || "";
  if (o.li) setState(o.li, state, detail);
}

// pump sends the oldest unsent message of conversation key unless one of
// its messages is already on its way or the queue waits (rate_limited,
// unavailable): one at a time, in the order written.
function pump(key) {
  if (holds.has(key)) return;
  let head = null;
  for (const o of outbox.values()) {
    if (o.key !== key || o.failed) continue;
    if (!head) {
      head = o;
      if (o.inflight) return;
      if (conn && conn.send(o.frame)) {
        o.inflight = true;
        setOutState(o, o.attempt ? "retrying" : "pending", o.attempt ? "retrying…" : "");
      } else setOutState(o, "queued");
      continue;
    }
    // Behind the head: queued while offline, pending (next in line) otherwise.
    const state = head.inflight ? "pending" : "queued";
    if (o.state !== state) setOutState(o, state);
  }
}

function flushOutbox() {
  for (const key of new Set([...outbox.values()].map((o) => o.key))) pump(key);
}

// holdQueue makes conversation key's queue wait delay ms, then go on in order.
function holdQueue(key, delay) {
  clearTimeout(holds.get(key));
  holds.set(key, setTimeout(() => { holds.delete(key); pump(key); }, delay));
}

function onAck(f) {
  const op = ops.get(f.client_id);
  if (op) return finishOp(f.client_id, op, null);
  const o = outbox.get(f.client_id);
  if (!o) return;
  outbox.delete(f.client_id);
  saveOutbox();
  o.inflight = false;
  setOutState(o, "sent");
  const c = convs.get(o.key);
  if (c && o.li && f.id && !o.li.dataset.id) {
    o.li.dataset.id = f.id;
    c.ids.set(f.id, o.li);
    decorate(c, o.li);
  }
  pump(o.key);
}

// failOut marks one of the outbox's messages as refused for good: it stays
// shown, with Retry, Edit and Dismiss, and the next message goes out.
function failOut(o, msg) {
  o.failed = true;
  o.inflight = false;
  o.attempt = 0;
  setOutState(o, "failed", "not sent: " + msg);
  saveOutbox();
  if (o.li) unsentActions(o.li);
}

// unsentActions gives a message the server refused its three ways out.
function unsentActions(li) {
  if (li.querySelector(":scope > .unsent")) return;
  li.append(el("div", { class: "unsent", role: "group", "aria-label": "Your message was not sent" },
    el("button", { type: "button", class: "act", "data-act": "retry", "aria-label": "Retry sending your message", text: "Retry" }),
    el("button", { type: "button", class: "act", "data-act": "revise", "aria-label": "Edit your unsent message in the composer", text: "Edit" }),
    el("button", { type: "button", class: "act", "data-act": "dismiss", "aria-label": "Dismiss your unsent message", text: "Dismiss" })));
}

// dropUnsent forgets a refused message and its element, and moves the
// focus to where the reader can go on: the composer when it is open, else
// the next (or previous) unsent message's actions, else the log.
function dropUnsent(c, li) {
  const o = li.dataset.cid && outbox.get(li.dataset.cid);
  if (!o || !o.failed) return null;
  const near = [li.nextElementSibling, li.previousElementSibling].find((x) => x && x.querySelector(":scope > .unsent button"));
  outbox.delete(li.dataset.cid);
  saveOutbox();
  unregister(c, li);
  li.remove();
  $("composer-error").textContent = "";
  if (!closedReason(c)) $("content").focus();
  else if (near) near.querySelector(":scope > .unsent button").focus();
  else log.focus();
  return o;
}

// retryUnsent sends a refused message again. The refusal was definitive
// for that send, so it goes out as a new send (a new client_id), after
// whatever is queued.
function retryUnsent(c, li) {
  const o = li.dataset.cid && outbox.get(li.dataset.cid);
  if (!o || !o.failed) return;
  if (closedReason(c)) {
    $("composer-error").textContent = closedReason(c);
    return;
  }
  outbox.delete(li.dataset.cid);
  unregister(c, li);
  const cid = crypto.randomUUID();
  o.frame = { ...o.frame, client_id: cid };
  o.failed = false;
  o.attempt = 0;
  li.dataset.cid = cid;
  register(c, li);
  outbox.set(cid, o);
  const box = li.querySelector(":scope > .unsent");
  if (box) box.remove();
  setOutState(o, "pending");
  c.list.append(li);
  saveOutbox();
  $("composer-error").textContent = "";
  $("content").focus();
  pump(o.key);
}

// reviseUnsent puts a refused message's text back in the composer; while
// the composer is closed (muted, removed) the message stays as it is.
function reviseUnsent(c, li) {
  if (closedReason(c)) {
    $("composer-error").textContent = closedReason(c) + " The message stays here until you can edit it.";
    return;
  }
  const o = dropUnsent(c, li);
  if (!o) return;
  const ta = $("content");
  ta.value = ta.value.trim() ? ta.value + "\n" + o.frame.content : o.frame.content;
  ta.focus();
}

function onError(f) {
  const cid = f.client_id || "";
  const msg = f.message || f.code || "error";
  if (cid.startsWith("join:")) {
    const c = convs.get("#" + cid.slice(5));
    if (f.code === "unavailable" && c) { setTimeout(() => conn.online && sendJoin(c), 2000 * (1 + Math.random())); return; }
    if (c && f.code === "forbidden") {
      // Private (and not invited), or banned: the server does not say which.
      c.member = false;
      c.joined = false;
      c.loaded = false;
      c.refused = true;
      c.notice = `Could not join #${c.name}: ${msg}`;
      saveRooms();
      updateBadge(c);
      if (c === current) showConvChrome();
    }
    if (c) note(c, "Could not join: " + msg);
    if (c === current || !c) $("composer-error").textContent = msg;
    $("join-error").textContent = msg;
    return;
  }
  const op = ops.get(cid);
  if (op) {
    // History, which checks edits and deletes, stores a message up to a
    // second after it is sent (more on a busy server): a change of a
    // message that new is retried while the message is under 30 s old.
    const t = op.li.querySelector("time");
    const age = t && t.dateTime ? Date.now() - Date.parse(t.dateTime) : Infinity;
    if ((f.code === "not_found" || f.code === "unavailable") && op.tries < 10 && age < 30000) {
      op.tries++;
      ops.delete(cid);
      clearTimeout(op.timer);
      setTimeout(() => sendOp(op.c, op.li, op.kind, op.content, op.tries), Math.min(700 * op.tries, 3000));
      return;
    }
    return finishOp(cid, op, msg);
  }
  const o = outbox.get(cid);
  if (!o && !cid) {
    // A read refused (the only frame the page sends without a client_id
    // that the server answers): nothing the user wrote. When the server
    // may take it later, it goes again.
    if (f.code === "rate_limited" || f.code === "unavailable") readRefused();
    else console.warn("chat: read refused:", f.code, msg);
    return;
  }
  if (!o) { $("composer-error").textContent = msg; return; }
  o.inflight = false;
  if (f.code === "unavailable") {
    o.attempt++;
    const delay = Math.min(30000, 1000 * 2 ** (o.attempt - 1)) * (0.75 + Math.random() * 0.5);
    setOutState(o, "retrying", `not sent yet: retrying in ${Math.ceil(delay / 1000)} s`);
    holdQueue(o.key, delay);
  } else if (f.code === "rate_limited") {
    // The messages written after this one wait with it, and follow it.
    o.attempt++;
    setOutState(o, "waiting", "slowed down: retrying…");
    holdQueue(o.key, 1000 + Math.random() * 1000);
  } else {
    failOut(o, msg);
    if (o.key === (current && current.key)) $("composer-error").textContent = msg;
    else $("composer-error").textContent = `${o.key}: ${msg}`;
    pump(o.key);
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
      c.member = true;
      if (c.refused) { c.refused = false; updateBadge(c); if (c === current) showConvChrome(); }
      if (c === current) $("join-error").textContent = "";
      if (!c.muted && c.notice) { c.notice = ""; if (c === current) showConvChrome(); }
      if (c.fromNow) {
        // Joined without a position (the room's history was empty or not
        // available): whatever was appended between reading history and
        // joining is only in history, which lags the log by up to a second.
        c.fromNow = false;
        setTimeout(() => { if (convs.get(c.key) === c && !c.detached) loadNewest(c); }, 1500);
      }
      if (f.recovered === false) {
        // The log no longer holds everything missed: show the newest
        // history page (live events after it stay), and read it again once
        // history has stored what the log appended just before the join.
        document.body.dataset.unrecovered = String(Number(document.body.dataset.unrecovered || 0) + 1);
        reloadNewest(c);
        setTimeout(() => { if (convs.get(c.key) === c) reloadNewest(c); }, 1500);
      }
      if (c === current) refreshMembers();
      break;
    }
    case "left": onLeft(f); break;
    case "member": onMember(f); break;
    case "typing": onTyping(f); break;
    case "read": onRead(f); break;
    case "edit":
    case "delete": onChange(f); break;
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
      const isNew = !convs.has("@" + peer);
      const c = conv("dm", peer);
      if (isNew) refreshPresence(); // its dot, now rather than at the next poll
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
  $("announcement-text").dir = "auto";
  $("announcement").hidden = false;
}

// onOnline resumes every room (with since), catches up on private
// messages, and sends what was queued.
function onOnline() {
  for (const c of convs.values()) {
    if (c.kind !== "room") continue;
    c.joined = false;
    if (!c.member) continue;
    if (c.loaded) sendJoin(c);
    else startRoom(c);
  }
  // The open DM, when its history could not be read before.
  if (current && current.kind === "dm" && !current.loaded && !current.loading) loadNewest(current);
  // The server's unread counts: what arrived, and what was read on another
  // device, while this tab was away (it missed those read frames). Again
  // once history has what the rooms' resumes just replayed (counted here
  // as they arrive).
  if (unreadLoaded) loadUnread({ dmsOnly: true }); // rooms count their replayed events meanwhile
  clearTimeout(unreadTimer);
  unreadTimer = setTimeout(() => conn && conn.online && loadUnread(), 2000);
  refreshRooms();
  loadBlocks();
  syncDMs();
  flushOutbox();
  for (const c of convs.values()) if (c.readWant) flushRead(c); // reads made while the socket was down
  dmsListed = false; // the next outage lists them again
  refreshMembers();
  refreshPresence();
}
let unreadTimer = null;
let dmsListed = false; // the DM list was asked for while the socket was down

// syncDMs lists conversations with news since the newest private message
// seen. History lags the log (by a second, more on a busy server), so a
// reconnect's sync runs again after 1.5 s and after 6.5 s.
async function syncDMs(later = [1500, 5000]) {
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
      // Page forward from what is shown (after the server's read positions
      // are in: what another device read is not unread).
      await unreadReady;
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
  if (later.length) setTimeout(() => conn && conn.online && syncDMs(later.slice(1)), later[0]);
}

// countHistoryUnread sets the unread count of a conversation not shown yet
// from its history after the read mark, unless GET /v1/unread counted it
// (at the page's start and at each reconnect: see onOnline).
async function countHistoryUnread(c, latest) {
  await unreadReady;
  const mark = readMarks[c.key] || "";
  if (!latest || latest.id <= mark || c === current || c.serverCounted) return;
  try {
    const msgs = await api.dmMessages(c.name, mark ? { after: mark, limit: 200 } : { limit: 200 });
    const theirs = msgs.filter((m) => countsUnread(m) && m.username !== me && m.id > mark);
    c.unread = theirs.length;
    c.mentioned = theirs.filter((m) => mentions(m.content, me)).length;
    updateBadge(c);
  } catch { /* keep the old count */ }
}

// --- conversations: rooms with owners, moderation, blocks, typing, read
// state, edits and deletes (docs/conversations.md)

// refreshRooms merges the rooms the server lists for this user (GET
// /v1/rooms: rooms with an owner the user may see, private ones only when
// invited) into the sidebar; a listed room joins when opened.
let roomsTimer = null;
async function refreshRooms() {
  clearTimeout(roomsTimer);
  roomsTimer = setTimeout(() => conn && conn.online && refreshRooms(), 30000);
  let list;
  try {
    list = await api.rooms();
  } catch {
    return; // keep the list as it is
  }
  const names = new Set();
  for (const r of list) {
    if (!r || !ROOM_RE.test(r.room || "")) continue;
    names.add(r.room);
    let c = convs.get("#" + r.room);
    if (!c) {
      c = conv("room", r.room);
      c.member = false;
    }
    c.private = !!r.private;
    c.owner = r.owner || "";
    setRole(c, r.role || "");
    // Muted before this page started: learnt here, not only from a frame.
    if (!!r.muted !== c.muted) {
      c.muted = !!r.muted;
      if (c.muted) c.notice = `You are muted in #${r.room}: you can read but not write here.`;
      else if (c.notice.includes("muted")) c.notice = "";
    }
    updateBadge(c);
  }
  for (const c of [...convs.values()]) {
    if (c.kind === "room" && !c.member && !c.revoked && !names.has(c.name) && c !== current) {
      convs.delete(c.key);
      c.item.remove();
    }
  }
  if (current && current.kind === "room") showConvChrome();
  // How many times the list was read (tests wait for it).
  document.body.dataset.roomsListed = String(Number(document.body.dataset.roomsListed || 0) + 1);
}

function setRole(c, role) {
  if (c.role === role) return;
  c.role = role;
  redecorate(c);
}

async function createRoom(name, isPrivate) {
  const err = $("create-error");
  err.textContent = "";
  let r;
  try {
    r = await api.createRoom(name, isPrivate);
  } catch (e) {
    if (e instanceof ApiError && e.status === 409) err.textContent = `A room named ${name} already exists: join it instead.`;
    else if (e instanceof ApiError && e.status === 401) authFailed("rejected");
    else err.textContent = "Could not create the room: " + (e.message || "the server cannot be reached");
    return;
  }
  $("create-room").value = "";
  $("create-private").checked = false;
  const c = conv("room", name);
  c.private = !!(r && r.private);
  c.owner = me;
  setRole(c, "owner");
  joinRoom(name);
}

// onMember handles a membership change of a room: the details panel
// follows, and a change of the user's own membership updates the room.
function onMember(f) {
  const room = f.room || "";
  const c = convs.get("#" + room);
  const by = f.by && f.by !== me ? f.by : "";
  if (f.username === me) {
    if (c) {
      switch (f.action) {
        case "mod": setRole(c, "mod"); break;
        case "unmod": setRole(c, c.role === "owner" ? "owner" : "member"); break;
        case "mute":
          c.muted = true;
          c.notice = `${by || "A moderator"} muted you in #${room}: you can read but not write here.`;
          break;
        case "unmute":
          c.muted = false;
          if (c.notice.includes("muted")) c.notice = "";
          // The refusal shown while muted is stale now.
          if (c === current) $("composer-error").textContent = "";
          break;
        case "remove":
          setRole(c, "");
          c.revokeReason = by ? `${by} removed you from #${room}.` : `You left #${room}.`;
          break;
        case "ban":
          setRole(c, "");
          c.revokeReason = `${by || "A moderator"} banned you from #${room}: you cannot join it again.`;
          if (!c.joined) c.notice = c.revokeReason;
          break;
        case "invite":
          if (!c.role) setRole(c, "member");
          readmit(c);
          break;
        case "unban":
          // Allowed to join again (a private room still needs an invitation).
          if (c === current) readmit(c);
          else if (c.revoked || c.refused) {
            c.revoked = false;
            c.refused = false;
            c.revokeReason = "";
            c.notice = "";
            redecorate(c);
          }
          break;
      }
      updateBadge(c);
      if (c === current) showConvChrome();
    }
    // An invitation makes a private room visible, a removal hides it. The
    // frame can come before history applied the change: ask again later.
    refreshRooms();
    setTimeout(() => conn && conn.online && refreshRooms(), 1500);
  }
  if (panelRoom === room) loadPanel();
}

// readmit clears a room's removal or refusal (an invitation, an unban) and
// joins it again: one join, after reading its history if it has none. (A
// join still on its way may be refused: the room is joined again.)
function readmit(c) {
  const wasOut = c.revoked || c.refused || (c.member && !c.joined);
  c.revoked = false;
  c.refused = false;
  c.revokeReason = "";
  if (c.notice && !c.muted) c.notice = "";
  if (!wasOut) return;
  c.member = true;
  saveRooms();
  redecorate(c);
  if (c === current) $("composer-error").textContent = "";
  if (!conn || !conn.online || c.joined) return;
  if (c.loaded) sendJoin(c);
  else startRoom(c);
}

// onLeft handles a left frame. The page forgets a room before it leaves
// it, so a left for a room still in the sidebar is one the user did not
// ask for: removed or banned.
function onLeft(f) {
  const c = convs.get("#" + f.room);
  if (!c || !c.member) return;
  c.joined = false;
  c.member = false;
  c.revoked = true;
  c.muted = false;
  c.notice = c.revokeReason || `You are no longer a member of #${c.name}: you cannot read or write here any more.`;
  note(c, c.notice);
  saveRooms();
  redecorate(c);
  updateBadge(c);
  if (c === current) showConvChrome();
}

// --- typing

function onTyping(f) {
  if (!f.username || f.username === me) return;
  const c = convs.get(f.room ? "#" + f.room : "@" + f.username);
  if (!c) return;
  clearTimeout(c.typers.get(f.username));
  c.typers.set(f.username, setTimeout(() => stopTyping(c, f.username), TYPING_SHOWN));
  if (c === current) showTyping();
}

function stopTyping(c, user) {
  clearTimeout(c.typers.get(user));
  c.typers.delete(user);
  if (c === current) showTyping();
}

function showTyping() {
  const names = current ? [...current.typers.keys()] : [];
  const text = names.length === 0 ? "" :
    names.length === 1 ? `${names[0]} is typing…` :
    names.length === 2 ? `${names[0]} and ${names[1]} are typing…` : "Several people are typing…";
  if ($("typing").textContent !== text) $("typing").textContent = text;
}

// typed sends a typing notice for the open conversation, at most one per
// TYPING_EVERY.
function typed() {
  const c = current;
  if (!c || !$("content").value.trim() || !conn || !conn.online) return;
  if (c.kind === "room" && (!c.joined || c.muted || c.revoked)) return;
  if (c.kind === "dm" && (c.name === me || blocked.has(c.name))) return;
  const now = Date.now();
  if (now < c.typingNext) {
    // Typing on right after a send: the notice goes out once the rate allows.
    if (c.sentSinceTyping && !c.typingTimer) {
      c.typingTimer = setTimeout(() => { c.typingTimer = null; if (c === current) typed(); }, c.typingNext - now);
    }
    return;
  }
  c.sentSinceTyping = false;
  c.typingNext = now + TYPING_EVERY;
  conn.send(c.kind === "room" ? { type: "typing", room: c.name } : { type: "typing", target: c.name });
}

// --- read state

// onRead: the user's own read from another connection clears what it
// read here; a DM peer's read shows "Seen" on the last message they read.
function onRead(f) {
  if (!f.pos) return;
  if (f.username === me) {
    const key = f.room ? "#" + f.room : "@" + (f.target || "");
    const c = convs.get(key);
    if (!c) return;
    if (!c.readPos || posAfter(f.pos, c.readPos)) {
      c.readPos = f.pos;
      readPos[key] = f.pos;
      save("readpos", readPos);
    }
    let after = 0, mentioned = 0;
    for (const li of c.list.children) {
      if (!li.dataset.pos || !li.dataset.user || li.dataset.user === me || li.classList.contains("deleted")) continue;
      if (posAfter(li.dataset.pos, f.pos)) {
        after++;
        if (li.classList.contains("mention")) mentioned++;
      }
    }
    c.unread = Math.min(c.unread, after);
    c.mentioned = Math.min(c.mentioned, mentioned);
    if (!after && c.latest && (readMarks[key] || "") < c.latest) {
      readMarks[key] = c.latest;
      save("read", readMarks);
    }
    updateBadge(c);
  } else if (f.target === me && !f.room) {
    const c = convs.get("@" + f.username);
    if (!c) return;
    setPeerRead(c, f.pos);
  }
}

// setPeerRead moves the DM peer's read position forward, remembers it
// and marks "Seen".
function setPeerRead(c, pos) {
  if (c.peerRead && !posAfter(pos, c.peerRead)) return;
  c.peerRead = pos;
  peerReads[c.key] = pos;
  save("peerread", peerReads);
  showSeen(c);
}

// showSeen marks the last of the user's messages the DM peer has read.
function showSeen(c) {
  if (!c.peerRead) return;
  let target = null;
  for (let li = c.list.lastElementChild; li; li = li.previousElementSibling) {
    if (li.classList.contains("mine") && li.dataset.pos && !posAfter(li.dataset.pos, c.peerRead)) { target = li; break; }
  }
  for (const x of c.list.querySelectorAll(".seen")) if (x.closest("li") !== target) x.remove();
  if (target && !target.querySelector(".seen")) {
    const head = target.querySelector(".head");
    head.insertBefore(el("span", { class: "seen", title: `${c.name} has read this`, text: "Seen" }), head.querySelector(".actions"));
  }
}

// loadUnread seeds unread counts from GET /v1/unread (the server's read
// positions, so a page that starts cold knows them). A conversation this
// page has read further than the server knows yet keeps its own count.
let unreadLoaded = false; // loadUnread ran once (the page's start)
function loadUnread({ dmsOnly = false } = {}) {
  unreadLoaded = true;
  unreadReady = (async () => {
    let list;
    try {
      list = await Promise.race([api.unread(), new Promise((_, fail) => setTimeout(() => fail(new Error("timeout")), 4000))]);
    } catch {
      return; // 404 from an older server, or unreachable: local counts only
    }
    if (!Array.isArray(list)) return;
    for (const x of list) {
      if (!x || typeof x.unread !== "number") continue;
      let c;
      if (x.room && ROOM_RE.test(x.room)) c = dmsOnly ? null : convs.get("#" + x.room);
      else if (x.peer && USER_RE.test(x.peer) && x.peer !== me) c = conv("dm", x.peer);
      if (!c) continue;
      // The DM peer's read position: "Seen" survives a reload.
      if (x.peer && typeof x.peer_read === "string" && POS_RE.test(x.peer_read)) setPeerRead(c, x.peer_read);
      const local = readPos[c.key];
      if (local && posAfter(local, x.last_read || "")) continue;
      if (x.last_read && (!c.readPos || posAfter(x.last_read, c.readPos))) c.readPos = x.last_read;
      c.serverCounted = true;
      if (c === current && visible()) continue;
      c.unread = x.unread;
      c.mentioned = Math.min(c.mentioned, x.unread);
      updateBadge(c);
      if (c.kind === "dm" && c.unread > 0 && !c.mentioned) countDMMentions(c);
    }
  })();
}

// countDMMentions marks a DM whose unread messages (counted by the server,
// which does not count mentions) mention the user: its newest page says.
async function countDMMentions(c) {
  try {
    markMentions(c, await api.dmMessages(c.name, { limit: Math.min(200, c.unread) }));
  } catch { /* no mark: the count stays */ }
}

// markMentions counts the unread messages of msgs (a history page of c)
// that mention the user: the server counts unread messages, not mentions.
function markMentions(c, msgs) {
  const theirs = msgs.filter((m) => m.pos && posAfter(m.pos, c.readPos) && m.username !== me && !m.deleted && mentions(m.content, me));
  c.mentioned = Math.min(c.unread, theirs.length);
  updateBadge(c);
}

// --- edits and deletes

function opTimeout(cid) {
  const op = ops.get(cid);
  if (op) finishOp(cid, op, "The server did not answer; the message may not have changed. Try again.");
}

// sendOp sends an edit or delete frame for li's message.
function sendOp(c, li, kind, content, tries = 0) {
  const id = li.dataset.id;
  if (!id) return;
  const cid = kind + ":" + crypto.randomUUID();
  const frame = kind === "edit" ? { type: "edit", id, content, client_id: cid } : { type: "delete", id, client_id: cid };
  if (!conn || !conn.send(frame)) {
    opStatus(li, "", "You are offline: try again once connected.");
    return;
  }
  ops.set(cid, { kind, c, li, id, content, tries, timer: setTimeout(() => opTimeout(cid), 20000) });
  opStatus(li, kind === "edit" ? "saving…" : "deleting…", "");
}

// finishOp ends an edit or delete: on the ack the change shows at once
// (the edit or delete frame that follows changes nothing more); an error
// shows the server's message on the message.
function finishOp(cid, op, error) {
  ops.delete(cid);
  clearTimeout(op.timer);
  if (error) {
    opStatus(op.li, "", (op.kind === "edit" ? "Not edited: " : "Not deleted: ") + error);
    return;
  }
  opStatus(op.li, "", "");
  if (op.kind === "edit") setContent(op.li, op.content, new Date().toISOString());
  else deleteShown(op.c, op.li);
}

function opStatus(li, text, error) {
  let st = li.querySelector(":scope > .op");
  if (!st) {
    st = el("span", { class: "op", role: "status" });
    li.append(st);
  }
  st.textContent = text;
  let er = li.querySelector(":scope > .op-error");
  if (!er && error) {
    er = el("p", { class: "op-error error", role: "alert" });
    li.append(er);
  }
  if (er) er.textContent = error;
}

function deleteShown(c, li) {
  if (li.classList.contains("deleted")) return;
  const t = li.querySelector("time");
  const hadFocus = li.contains(document.activeElement);
  markDeleted(li, t && t.dateTime);
  if (hadFocus) { li.tabIndex = -1; li.focus(); }
  if (c.peerRead) showSeen(c);
}

// uncount takes a deleted message out of c's unread count when it was one
// of the unread: someone else's, after the read position.
function uncount(c, f, li) {
  if (!c.unread) return;
  let author = "", pos = "", mentioned = false;
  const ev = c.buffer.find((x) => x.id === f.id);
  if (li) {
    if (li.classList.contains("deleted") || li.classList.contains("note")) return;
    author = li.dataset.user || "";
    pos = li.dataset.pos || "";
    mentioned = li.classList.contains("mention");
  } else if (ev) {
    if (ev.deleted || !countsUnread(ev)) return;
    author = ev.username || "";
    pos = ev.pos || "";
    mentioned = mentions(ev.content, me);
  } else if (c.kind === "dm" && !c.loaded) {
    author = f.username || ""; // a DM is deleted by its author only
  } else return;
  if (!author || author === me) return;
  if (pos && c.readPos && !posAfter(pos, c.readPos)) return;
  if (f.id <= (readMarks[c.key] || "")) return;
  c.unread--;
  if (mentioned && c.mentioned) c.mentioned--;
  updateBadge(c);
}

// onChange applies an edit or delete frame to the message it names.
function onChange(f) {
  if (!f.id) return;
  const key = f.room ? "#" + f.room : "@" + (f.username === me ? f.target : f.username);
  const c = convs.get(key);
  if (!c) return;
  if (c.kind === "room" && f.pos && posAfter(f.pos, c.lastPos)) c.lastPos = f.pos; // resume covers it
  const li = c.ids.get(f.id);
  if (f.type === "delete") uncount(c, f, li);
  for (const ev of c.buffer) {
    if (ev.id !== f.id) continue;
    if (f.type === "edit") { ev.content = f.content; ev.edited_at = f.edited_at; } else ev.deleted = true;
  }
  if (!li) return;
  if (f.type === "edit") {
    const editing = li.querySelector("form.edit");
    setContent(li, f.content, f.edited_at);
    if (editing) li.querySelector(".body").hidden = true;
  } else deleteShown(c, li);
}

function startEdit(c, li) {
  if (li.querySelector("form.edit") || !li.dataset.id) return;
  const body = li.querySelector(".body");
  const before = body.textContent;
  const id = "edit-" + li.dataset.id;
  const ta = el("textarea", { id, rows: 2, maxLength: MAX_CHARS * 2, dir: "auto" });
  ta.value = before;
  const label = el("label", { class: "sr-only", text: "Edit your message" });
  label.htmlFor = id;
  const form = el("form", { class: "edit" }, label, ta,
    el("span", { class: "row" },
      el("button", { type: "submit", text: "Save" }),
      el("button", { type: "button", class: "cancel", text: "Cancel" })));
  const done = () => {
    form.remove();
    body.hidden = false;
    const b = li.querySelector('[data-act="edit"]');
    if (b) b.focus();
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = ta.value;
    if (!text.trim()) { opStatus(li, "", "A message cannot be empty: delete it instead."); return; }
    if ([...text].length > MAX_CHARS) { opStatus(li, "", `The message is ${[...text].length} characters; the limit is ${MAX_CHARS}.`); return; }
    done();
    if (text !== before) sendOp(c, li, "edit", text);
  });
  form.querySelector(".cancel").addEventListener("click", done);
  ta.addEventListener("keydown", (e) => {
    if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); done(); }
    else if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
  });
  opStatus(li, "", "");
  body.hidden = true;
  body.after(form);
  ta.focus();
}

// askDelete asks in place (no dialog) before deleting.
function askDelete(c, li) {
  const box = li.querySelector(":scope > .head > .actions");
  if (!box || box.querySelector(".confirm")) return;
  const yes = el("button", { type: "button", class: "act confirm", "data-act": "confirm-delete", text: "Delete", "aria-label": "Yes, delete this message" });
  const no = el("button", { type: "button", class: "act", "data-act": "cancel-delete", text: "Keep" , "aria-label": "No, keep this message" });
  const saved = [...box.childNodes];
  box.replaceChildren(el("span", { class: "ask", text: "Delete this message?" }), yes, no);
  box.restore = () => { box.replaceChildren(...saved); const d = box.querySelector('[data-act="delete"]'); if (d) d.focus(); };
  yes.focus();
}

function onAction(e) {
  const b = e.target.closest("button.act");
  if (!b || !current) return;
  const li = b.closest("li.msg");
  if (!li || !current.list.contains(li)) return;
  const c = current;
  switch (b.dataset.act) {
    case "edit": startEdit(c, li); break;
    case "delete": askDelete(c, li); break;
    case "cancel-delete": b.closest(".actions").restore(); break;
    case "confirm-delete": b.closest(".actions").restore(); sendOp(c, li, "delete"); break;
    case "retry": retryUnsent(c, li); break;
    case "revise": reviseUnsent(c, li); break;
    case "dismiss": dropUnsent(c, li); break;
  }
}

// --- blocks

async function loadBlocks() {
  try {
    blocked = new Set(await api.blocks());
  } catch {
    return;
  }
  for (const c of convs.values()) if (c.kind === "dm") updateBadge(c);
  if (current && current.kind === "dm") showConvChrome();
}

async function toggleBlock() {
  const c = current;
  if (!c || c.kind !== "dm") return;
  const block = !blocked.has(c.name);
  $("block").disabled = true;
  try {
    await api.setBlock(c.name, block);
    if (block) blocked.add(c.name); else blocked.delete(c.name);
    if (c.notice.startsWith("Could not")) c.notice = "";
  } catch (e) {
    c.notice = `Could not ${block ? "block" : "unblock"} ${c.name}: ${e.message || "the server cannot be reached"}`;
  } finally {
    $("block").disabled = false;
  }
  updateBadge(c);
  if (c === current) showConvChrome();
}

// --- room details panel

let panelRoom = null;

function openPanel() {
  const c = current;
  if (!c || c.kind !== "room") return;
  panelRoom = c.name;
  $("panel").hidden = false;
  $("details").setAttribute("aria-expanded", "true");
  $("panel-h").textContent = `#${c.name}: details`;
  $("manage-status").textContent = "";
  $("manage-error").textContent = "";
  $("panel-summary").textContent = "Loading…";
  $("panel-members").replaceChildren();
  loadPanel();
  $("panel-h").tabIndex = -1;
  $("panel-h").focus();
}

function closePanel(focus = true) {
  panelRoom = null;
  $("panel").hidden = true;
  $("details").setAttribute("aria-expanded", "false");
  if (focus) $("details").focus();
}

async function loadPanel() {
  const room = panelRoom;
  if (!room) return;
  const c = convs.get("#" + room);
  let d;
  try {
    d = await api.room(room);
  } catch (e) {
    if (panelRoom !== room) return;
    $("panel-members").replaceChildren();
    $("manage-form").hidden = !admin;
    $("panel-summary").textContent = e instanceof ApiError && e.status === 404
      ? `#${room} is a public room without an owner (or one you may not see): anyone may join; only admins moderate it.`
      : "Room details are not available right now: " + (e.message || "the server cannot be reached");
    return;
  }
  if (panelRoom !== room) return;
  if (c) {
    c.private = !!d.private;
    c.owner = d.owner || "";
    setRole(c, d.role || "");
  }
  const members = Array.isArray(d.members) ? d.members : [];
  const mine = members.find((m) => m.username === me);
  if (c && mine) {
    c.muted = !!mine.muted;
    updateBadge(c);
  }
  $("panel-summary").textContent = `${d.private ? "Private" : "Public"} room` +
    (d.owner ? `, owned by ${d.owner}` : ", without an owner") + `. Your role: ${d.role || "not a member"}.`;
  $("panel-members").replaceChildren(...(members.length ? members.map((m) => el("li", {
    "data-user": m.username,
    text: `${m.username}: ${m.role || "not a member"}` + (m.muted ? ", muted" : "") + (m.banned ? ", banned" : ""),
  })) : [el("li", { text: "No members recorded." })]));
  $("manage-form").hidden = !(admin || d.role === "owner" || d.role === "mod");
  if (c === current) showConvChrome();
}

// The naming rules, as the page explains them.
const ROOM_RULE = "Room names are 1 to 64 characters: lowercase letters, digits, - and _, starting with a letter or digit.";
const USER_RULE = "Usernames are 1 to 64 characters: letters, digits, ., - and _, starting with a letter or digit.";

// checkName shows rule next to input (and marks it invalid) when name does
// not match re, or clears both; it reports whether name matched.
function checkName(input, error, name, re, rule) {
  if (!re.test(name)) {
    error.textContent = rule;
    input.setAttribute("aria-invalid", "true");
    return false;
  }
  error.textContent = "";
  input.removeAttribute("aria-invalid");
  return true;
}

async function manage(action) {
  const room = panelRoom;
  const input = $("manage-user");
  const user = input.value.trim().replace(/^@/, "");
  $("manage-status").textContent = "";
  $("manage-error").textContent = "";
  if (!room) return;
  if (!checkName(input, $("manage-error"), user, USER_RE, USER_RULE)) {
    input.focus();
    return;
  }
  try {
    const r = await api.manage(room, action, user);
    if (panelRoom !== room) return;
    const state = r ? (r.role ? r.role : "not a member") + (r.muted ? ", muted" : "") + (r.banned ? ", banned" : "") : "";
    $("manage-status").textContent = `Done: ${action} ${user}` + (state ? ` (now ${state}).` : ".");
  } catch (e) {
    if (panelRoom !== room) return;
    const why = e instanceof ApiError && e.status === 403 ? "you may not do that to this user" :
      e instanceof ApiError && e.status === 404 ? "no such room, or you may not see it" : "";
    $("manage-error").textContent = `Could not ${action} ${user}: ${e.message || "the server cannot be reached"}` + (why ? ` (${why}).` : "");
  }
  loadPanel();
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
  if (!peers.length || !conn) return;
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
  // The drawer (narrow layout) would cover the results: it closes, and the
  // focus moves to them.
  const fromDrawer = $("sidebar").classList.contains("open");
  closeSidebar();
  $("search-results").hidden = false;
  if (fromDrawer) $("search-close").focus();
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
    b.querySelector(".text").dir = "auto";
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
    pinned = atBottom();
    lastScrollTop = log.scrollTop;
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
    // The socket does not come up: the open room's newest page, the DM
    // list and the presence dots come over HTTP meanwhile (the join
    // resumes from that page once online).
    if (current && current.kind === "room" && current.member && !current.loaded && !current.loading) loadNewest(current, { soft: true });
    if (!dmsListed) { dmsListed = true; syncDMs([]); }
    const tick = () => {
      const left = Math.max(0, Math.ceil((s.nextAt - Date.now()) / 1000));
      text.textContent = `Disconnected${s.detail ? ": " + s.detail : ""}. Reconnecting in ${left} s.`;
    };
    tick();
    countdown = setInterval(tick, 1000);
  }
  // What was on its way is sent again (same client_id) once back online.
  for (const o of outbox.values()) {
    if (o.failed) continue;
    o.inflight = false;
    if (!holds.has(o.key) && o.state !== "queued") setOutState(o, "queued");
  }
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
  sessionStorage.removeItem(`chat:${me}:outbox`); // signing out gives up what was not sent
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
  admin = !!claims.admin;
  $("me").textContent = me;
  $("signin").hidden = true;
  $("app").hidden = false;
  api = new Api(() => token);
  readMarks = load("read", {});
  readPos = load("readpos", {});
  peerReads = load("peerread", {});
  for (const r of load("rooms", ["general"])) if (ROOM_RE.test(r)) conv("room", r);
  restoreOutbox();
  // The conversation open before the reload opens again; a DM one is not
  // listed until GET /v1/dm answers, so it is made now.
  const savedKey = load("current", "");
  if (savedKey.startsWith("@") && USER_RE.test(savedKey.slice(1)) && savedKey.slice(1) !== me) conv("dm", savedKey.slice(1));
  const saved = convs.get(savedKey) || [...convs.values()][0];
  conn = new Connection({ token, exp: claims.exp, user: me, api, onFrame, onState, onAuthFailed: authFailed });
  if (claims.exp) {
    // The edge closes the socket with 1008 at exp (Connection: sign-in
    // screen); this timer is the fallback when that close does not come.
    const wait = claims.exp - Date.now() + 3000;
    if (wait < 2 ** 31 - 1) expiryTimer = setTimeout(() => authFailed("expired"), wait);
  }
  loadUnread();
  // A DM's history needs no socket: it loads now (a room's once online).
  if (saved) openConv(saved, { noLoad: saved.kind === "room" });
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
      else if (!$("panel").hidden && $("panel").contains(document.activeElement)) closePanel();
      else if (!$("search-results").hidden) { $("search-results").hidden = true; $("search-q").focus(); }
    }
  });
  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("join-room").value.trim();
    if (!checkName($("join-room"), $("join-error"), name, ROOM_RE, ROOM_RULE)) return;
    $("join-room").value = "";
    joinRoom(name);
  });
  $("dm-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("dm-user").value.trim().replace(/^@/, "");
    if (!checkName($("dm-user"), $("dm-error"), name, USER_RE, USER_RULE)) return;
    $("dm-user").value = "";
    openConv(conv("dm", name));
  });
  $("leave").addEventListener("click", () => current && current.kind === "room" && leaveRoom(current));
  $("create-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("create-room").value.trim();
    if (!checkName($("create-room"), $("create-error"), name, ROOM_RE, ROOM_RULE)) return;
    createRoom(name, $("create-private").checked);
  });
  $("details").addEventListener("click", () => ($("panel").hidden ? openPanel() : closePanel()));
  $("panel-close").addEventListener("click", () => closePanel());
  $("manage-form").addEventListener("submit", (e) => {
    e.preventDefault();
    manage((e.submitter && e.submitter.dataset.action) || "invite");
  });
  for (const b of $("manage-form").querySelectorAll("button[type=button][data-action]")) {
    b.addEventListener("click", () => manage(b.dataset.action));
  }
  $("block").addEventListener("click", toggleBlock);
  log.addEventListener("click", onAction);
  $("content").addEventListener("input", typed);
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    // The composer keeps a text that could not be sent (too long), for
    // the writer to shorten.
    if (send($("content").value)) $("content").value = "";
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
    // Only the reader scrolling up unpins: a scroll event that comes after
    // the log got shorter (a line appeared under it) must not.
    if (atBottom()) pinned = true;
    else if (log.scrollTop < lastScrollTop - 1) pinned = false;
    lastScrollTop = log.scrollTop;
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
  // A sign-in link opened in a tab that already shows the page.
  window.addEventListener("hashchange", () => {
    const t = new URLSearchParams(location.hash.slice(1)).get("token");
    if (!t) return;
    sessionStorage.setItem("chat.token", t);
    history.replaceState(null, "", location.pathname + location.search);
    if (conn) conn.stop();
    location.reload();
  });
}

wire();
start();
