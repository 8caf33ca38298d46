// Building message elements. Every user-provided string goes into the DOM
// as text (textContent, text nodes); the only elements made from message
// content are links, and only for http and https URLs.

const URL_RE = /\bhttps?:\/\/[^\s<>"']+/gi;

// trimURL drops the prose after a URL: trailing punctuation, and closing
// brackets it does not open ("(see http://x.test/a)" ends at /a, while
// http://x.test/wiki/A_(b) keeps its parenthesis).
export function trimURL(s) {
  const count = (c) => s.split(c).length - 1;
  for (;;) {
    const t = s.replace(/[.,;:!?'"]+$/, "");
    if (t !== s) { s = t; continue; }
    if (s.endsWith(")") && count(")") > count("(")) { s = s.slice(0, -1); continue; }
    if (s.endsWith("]") && count("]") > count("[")) { s = s.slice(0, -1); continue; }
    return s;
  }
}

// appendLinkified appends text to el, with http(s) URLs as links.
export function appendLinkified(el, text) {
  let last = 0;
  for (const m of text.matchAll(URL_RE)) {
    const raw = trimURL(m[0]);
    if (m.index > last) el.append(document.createTextNode(text.slice(last, m.index)));
    let url = null;
    try { url = new URL(raw); } catch { /* not a URL after all */ }
    if (url && (url.protocol === "http:" || url.protocol === "https:")) {
      const a = document.createElement("a");
      a.href = url.href;
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      a.textContent = raw;
      el.append(a);
    } else {
      el.append(document.createTextNode(raw));
    }
    last = m.index + raw.length;
  }
  if (last < text.length) el.append(document.createTextNode(text.slice(last)));
}

export function mentions(content, me) {
  if (!me || !content) return false;
  const esc = me.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`(^|[^A-Za-z0-9_.-])@${esc}(?![A-Za-z0-9_-])`, "i").test(content);
}

function timeOf(ts) {
  const d = ts ? new Date(ts) : new Date();
  const t = document.createElement("time");
  if (!isNaN(d)) {
    t.dateTime = d.toISOString();
    t.textContent = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    t.title = d.toLocaleString();
  }
  return t;
}

export const STATE_TEXT = {
  pending: "sending…",
  queued: "queued: offline",
  retrying: "retrying…",
  waiting: "slowed down: retrying…",
  sent: "sent",
  failed: "not sent",
};

// messageElement renders one chat, private or system event, or the
// tombstone of a deleted one.
export function messageElement(ev, me) {
  const li = document.createElement("li");
  li.className = "msg";
  if (ev.id) li.dataset.id = ev.id;
  if (ev.pos) li.dataset.pos = ev.pos;
  if (ev.deleted) {
    markDeleted(li, ev.timestamp);
    return li;
  }
  if (ev.type === "leave" || ev.type === "join") {
    // Presence in the room's log (the router's leave when a member's
    // connection was lost): a note, not a message.
    li.classList.add("note");
    const body = document.createElement("div");
    body.className = "body";
    body.append(`${ev.username || "Someone"} ${ev.type === "leave" ? "left (connection lost)" : "joined"} `, timeOf(ev.timestamp));
    li.append(body);
    return li;
  }
  if (ev.client_id) li.dataset.cid = ev.client_id;
  if (ev.username) li.dataset.user = ev.username;
  const head = document.createElement("div");
  head.className = "head";
  const who = document.createElement("span");
  who.className = "user";
  if (ev.type === "system") {
    li.classList.add("announcement");
    who.append(el("span", { "aria-hidden": "true", text: "📣 " }), "Announcement");
  } else {
    who.textContent = ev.username || "";
    if (ev.username === me) li.classList.add("mine");
    else if (mentions(ev.content, me)) li.classList.add("mention");
  }
  head.append(who, timeOf(ev.timestamp));
  const edited = document.createElement("span");
  edited.className = "edited";
  head.append(edited);
  if (ev.username === me && ev.type !== "system") {
    const st = document.createElement("span");
    st.className = "state";
    head.append(st);
  }
  const body = document.createElement("div");
  body.className = "body";
  body.dir = "auto"; // right-to-left text is laid out as such
  appendLinkified(body, ev.content || "");
  li.append(head, body);
  if (ev.edited_at) markEdited(li, ev.edited_at);
  return li;
}

// setContent replaces a message's text (an edit).
export function setContent(li, content, editedAt) {
  const body = li.querySelector(".body");
  if (!body || li.classList.contains("deleted")) return;
  // An edit older than the one shown (delivered late) changes nothing.
  if (editedAt && li.dataset.editedAt && editedAt < li.dataset.editedAt) return;
  if (editedAt) li.dataset.editedAt = editedAt;
  body.replaceChildren();
  appendLinkified(body, content || "");
  markEdited(li, editedAt);
}

function markEdited(li, editedAt) {
  const e = li.querySelector(".edited");
  if (!e) return;
  e.textContent = "(edited)";
  const d = editedAt ? new Date(editedAt) : null;
  e.title = d && !isNaN(d) ? "edited " + d.toLocaleString() : "edited";
  li.classList.add("was-edited");
}

// markDeleted turns li into the tombstone of a deleted message.
export function markDeleted(li, ts) {
  li.className = "msg deleted";
  delete li.dataset.state;
  const head = document.createElement("div");
  head.className = "head";
  if (ts) head.append(timeOf(ts));
  const body = document.createElement("div");
  body.className = "body tombstone";
  body.textContent = "message deleted";
  li.replaceChildren(head, body);
}

// setState shows a message's delivery state on one of the user's own messages.
export function setState(li, state, detail) {
  li.dataset.state = state;
  const st = li.querySelector(".state");
  if (st) st.textContent = detail || STATE_TEXT[state] || state;
}

// lockIcon is the private-room mark: a drawn lock (no emoji font needed)
// with a text alternative.
export function lockIcon(hidden) {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", "0 0 16 16");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const body = document.createElementNS(NS, "rect");
  for (const [k, v] of Object.entries({ x: 3, y: 7, width: 10, height: 8, rx: 1.5, fill: "currentColor" })) body.setAttribute(k, v);
  const shackle = document.createElementNS(NS, "path");
  for (const [k, v] of Object.entries({ d: "M5 7V5a3 3 0 0 1 6 0v2", fill: "none", stroke: "currentColor", "stroke-width": 1.8 })) shackle.setAttribute(k, v);
  svg.append(body, shackle);
  const span = el("span", { class: "lock", role: "img", "aria-label": "private", title: "private room", hidden: !!hidden });
  span.append(svg);
  return span;
}

export function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role") e.setAttribute(k, v);
    else e[k] = v;
  }
  e.append(...children);
  return e;
}
