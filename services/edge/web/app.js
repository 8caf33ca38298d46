// The browser client. Text is always rendered with textContent, never as HTML.
"use strict";
const $ = (id) => document.getElementById(id);
const log = $("log"), statusEl = $("status");
const hashToken = new URLSearchParams(location.hash.slice(1)).get("token");
if (hashToken) { localStorage.setItem("chat.token", hashToken); history.replaceState(null, "", location.pathname); }
$("token").value = localStorage.getItem("chat.token") || "";

let ws = null, room = null, backoff = 500, timer = null;
const lastPos = {};   // room -> newest "partition:offset" shown
const shown = new Set(); // event ids shown (drops a duplicate of a retried send)

function line(cls, parts) {
  const div = document.createElement("div");
  div.className = "msg " + cls;
  for (const [c, text] of parts) {
    const span = document.createElement("span");
    if (c) span.className = c;
    span.textContent = text;
    div.appendChild(span);
  }
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 5;
  log.appendChild(div);
  if (atBottom) log.scrollTop = log.scrollHeight;
}
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
  ws.onopen = () => {
    backoff = 500;
    const join = { type: "join", room };
    if (lastPos[room]) join.since = lastPos[room];
    ws.send(JSON.stringify(join));
  };
  ws.onmessage = (m) => {
    let ev;
    try { ev = JSON.parse(m.data); } catch { return; }
    switch (ev.type) {
      case "welcome": statusEl.textContent = "online as " + ev.username; break;
      case "joined":
        if (ev.recovered === false) note("some messages may be missing (the log no longer holds them)");
        else if (ev.recovered === undefined) note("joined #" + ev.room);
        break;
      case "chat": case "system":
        if (ev.pos && ev.room) lastPos[ev.room] = ev.pos;
        if (shown.has(ev.id)) break;
        shown.add(ev.id);
        if (ev.type === "system") line("system", [["meta", ev.timestamp.slice(11, 19)], ["", "📣 " + ev.content]]);
        else line("", [["meta", ev.timestamp.slice(11, 19)], ["user", ev.username], ["", ev.content]]);
        break;
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

$("connect").onclick = () => { log.textContent = ""; shown.clear(); delete lastPos[$("room").value.trim()]; connect(); };
$("send").onsubmit = (e) => {
  e.preventDefault();
  const input = e.target.content;
  if (!ws || ws.readyState !== WebSocket.OPEN || !input.value) return;
  ws.send(JSON.stringify({ type: "chat", room, content: input.value, client_id: crypto.randomUUID() }));
  input.value = "";
};
if ($("token").value) connect();
