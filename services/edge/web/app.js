// The browser client. Text is always rendered with textContent, never as HTML.
"use strict";
const $ = (id) => document.getElementById(id);
const log = $("log"), statusEl = $("status");
const hashToken = new URLSearchParams(location.hash.slice(1)).get("token");
if (hashToken) { localStorage.setItem("chat.token", hashToken); history.replaceState(null, "", location.pathname); }
$("token").value = localStorage.getItem("chat.token") || "";

let ws = null, room = null, backoff = 500, timer = null;
const lastPos = {};   // room -> newest "partition:offset" shown
const shown = new Set(); // event ids, and username+client_id, shown: drops duplicates
let oldestID = null, loadingOlder = false, noOlder = false;

function line(cls, parts, prepend) {
  const div = document.createElement("div");
  div.className = "msg " + cls;
  for (const [c, text] of parts) {
    const span = document.createElement("span");
    if (c) span.className = c;
    span.textContent = text;
    div.appendChild(span);
  }
  if (prepend) {
    const h = log.scrollHeight;
    log.insertBefore(div, log.firstChild);
    log.scrollTop += log.scrollHeight - h;
    return;
  }
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 5;
  log.appendChild(div);
  if (atBottom) log.scrollTop = log.scrollHeight;
}

// show renders a chat or system event once.
function show(ev, prepend) {
  const dupKey = ev.client_id ? ev.username + "\u0000" + ev.client_id : null;
  if (shown.has(ev.id) || (dupKey && shown.has(dupKey))) return;
  shown.add(ev.id);
  if (dupKey) shown.add(dupKey);
  const ts = (ev.timestamp || "").slice(11, 19);
  if (ev.type === "system") line("system", [["meta", ts], ["", "📣 " + ev.content]], prepend);
  else if (ev.type === "private") line("private", [["meta", ts], ["user", ev.username + " → " + ev.target], ["", ev.content]], prepend);
  else line("", [["meta", ts], ["user", ev.username], ["", ev.content]], prepend);
}

// fetchPage reads a page of the room's history, newest first; null when the
// history API is not available (then the page is live only).
async function fetchPage(r, before) {
  const q = new URLSearchParams({ limit: "50" });
  if (before) q.set("before", before);
  try {
    const res = await fetch(`/v1/rooms/${encodeURIComponent(r)}/messages?${q}`,
      { headers: { Authorization: "Bearer " + $("token").value.trim() } });
    if (!res.ok) return null;
    return (await res.json()).messages;
  } catch { return null; }
}

// loadOlder pages back when the log is scrolled to the top.
async function loadOlder() {
  if (loadingOlder || noOlder || !oldestID || !room) return;
  loadingOlder = true;
  const page = await fetchPage(room, oldestID);
  loadingOlder = false;
  if (!page || page.length === 0) { noOlder = true; return; }
  for (const ev of page) show(ev, true); // newest first, each prepended
  oldestID = page[page.length - 1].id;
}
log.addEventListener("scroll", () => { if (log.scrollTop < 40) loadOlder(); });
const note = (t) => line("note", [["", t]]);

function connect() {
  clearTimeout(timer);
  const token = $("token").value.trim();
  room = $("room").value.trim();
  if (!token) { note("paste a token first (bin/chatctl token --user NAME)"); return; }
  localStorage.setItem("chat.token", token);
  if (ws) { ws.onclose = null; ws.close(); }
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  // The token travels as a subprotocol entry; the server selects "chat.v1".
  ws = new WebSocket(`${proto}//${location.host}/ws`, ["chat.v1", "bearer." + token]);
  statusEl.textContent = "connecting…";
  ws.onopen = async () => {
    backoff = 500;
    const join = { type: "join", room };
    if (!lastPos[room]) {
      // A fresh page: the newest history page first, then live from its newest pos.
      const page = await fetchPage(room);
      if (page && page.length > 0) {
        for (const ev of page.slice().reverse()) show(ev);
        lastPos[room] = page[0].pos;
        oldestID = page[page.length - 1].id;
        log.scrollTop = log.scrollHeight;
      } else if (page) {
        noOlder = true;
      }
    }
    if (lastPos[room]) join.since = lastPos[room];
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(join));
  };
  ws.onmessage = (m) => {
    let ev;
    try { ev = JSON.parse(m.data); } catch { return; }
    switch (ev.type) {
      case "welcome": statusEl.textContent = "online as " + ev.username; break;
      case "joined":
        if (ev.recovered === false) {
          note("reconnected after a long gap: showing the newest history");
          fetchPage(ev.room).then((page) => { if (page) for (const m of page.slice().reverse()) show(m); });
        } else if (ev.recovered === undefined) note("joined #" + ev.room);
        break;
      case "chat": case "system":
        if (ev.pos && ev.room) lastPos[ev.room] = ev.pos;
        show(ev);
        break;
      case "private": show(ev); break;
      case "leave": if (ev.room === room) note(ev.username + " left"); break;
      case "error": note(`error ${ev.code}: ${ev.message}`); break;
    }
  };
  ws.onclose = (e) => {
    statusEl.textContent = "offline";
    if (e.code === 1008 || e.code === 1003 || e.code === 1007) { note("closed: " + (e.reason || e.code)); return; }
    note(`disconnected (${e.code}); reconnecting in ${Math.round(backoff / 100) / 10}s`);
    timer = setTimeout(connect, backoff * (0.8 + Math.random() * 0.4));
    backoff = Math.min(backoff * 2, 15000);
  };
}

$("connect").onclick = () => {
  log.textContent = ""; shown.clear(); oldestID = null; noOlder = false;
  delete lastPos[$("room").value.trim()];
  connect();
};
$("send").onsubmit = (e) => {
  e.preventDefault();
  const input = e.target.content;
  if (!ws || ws.readyState !== WebSocket.OPEN || !input.value) return;
  const dm = input.value.match(/^@([A-Za-z0-9][A-Za-z0-9_.-]{0,63})\s+([\s\S]+)$/);
  const frame = dm ? { type: "private", target: dm[1], content: dm[2] } : { type: "chat", room, content: input.value };
  frame.client_id = crypto.randomUUID();
  ws.send(JSON.stringify(frame));
  input.value = "";
};

// The online list: the room's members, every few seconds (router API).
setInterval(async () => {
  if (!room || !ws || ws.readyState !== WebSocket.OPEN) return;
  try {
    const res = await fetch(`/v1/rooms/${encodeURIComponent(room)}/members`,
      { headers: { Authorization: "Bearer " + $("token").value.trim() } });
    if (res.ok) $("members").textContent = "online: " + (await res.json()).members.join(", ");
  } catch { /* the router may be elsewhere */ }
}, 3000);
if ($("token").value) connect();
