// HTTP side of the client: the history and presence APIs, and the token.
// Every call sends the token as a bearer header; nothing is fetched from
// anywhere but this page's own origin.

export const ROOM_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
export const USER_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
export const POS_RE = /^\d+:\d+$/; // a log position "<partition>:<offset>"

// ApiError is a non-2xx answer: status and the contract's error code.
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

// decodeToken reads a JWT's claims without verifying it (the server does):
// the page needs sub (who is signed in) and exp (when to stop trying).
export function decodeToken(token) {
  const parts = (token || "").split(".");
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(json, (c) => c.charCodeAt(0))));
    if (typeof claims !== "object" || claims === null) return null;
    return {
      sub: typeof claims.sub === "string" ? claims.sub : "",
      exp: typeof claims.exp === "number" ? claims.exp * 1000 : 0,
      admin: Array.isArray(claims.roles) && claims.roles.includes("admin"),
    };
  } catch {
    return null;
  }
}

export class Api {
  constructor(getToken) {
    this.getToken = getToken;
  }

  // get answers the decoded JSON body; it throws ApiError for an HTTP
  // error and TypeError when the server cannot be reached.
  get(path, params, cache) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (Array.isArray(v)) for (const x of v) q.append(k, x);
      else if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
    }
    return this.request("GET", q.toString() ? `${path}?${q}` : path, undefined, cache);
  }

  // request sends one call with an optional JSON body. Nothing is cached
  // unless cache says otherwise ("no-cache": revalidate the copy held).
  async request(method, url, payload, cache = "no-store") {
    const headers = { Authorization: "Bearer " + this.getToken() };
    const init = { method, headers, cache };
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    const res = await fetch(url, init);
    let body = null;
    try { body = await res.json(); } catch { /* not JSON */ }
    if (!res.ok) {
      const err = body && body.error ? body.error : {};
      throw new ApiError(res.status, err.code, err.message);
    }
    return body;
  }

  // roomMessages and dmMessages page a conversation: newest first, or with
  // after=ID oldest first.
  roomMessages(room, opts) {
    return this.get(`/v1/rooms/${encodeURIComponent(room)}/messages`, opts).then((b) => b.messages || []);
  }
  dmMessages(peer, opts) {
    return this.get(`/v1/dm/${encodeURIComponent(peer)}/messages`, opts).then((b) => b.messages || []);
  }
  conversations(since) {
    return this.get("/v1/dm", { since }).then((b) => b.conversations || []);
  }
  search(q, room) {
    return this.get("/v1/search", { q, room, limit: 30 }).then((b) => b.messages || []);
  }
  presence(users) {
    return this.get("/v1/presence", { user: users }).then((b) => b.users || []);
  }
  // The conversation API (docs/conversations.md): rooms with owners and
  // members, moderation, blocks and unread counts.
  rooms() {
    // Polled: revalidated with its ETag, mostly a 304 without a body.
    return this.get("/v1/rooms", undefined, "no-cache").then((b) => b.rooms || []);
  }
  createRoom(room, isPrivate) {
    return this.request("POST", `/v1/rooms/${encodeURIComponent(room)}`, { private: !!isPrivate });
  }
  room(room) {
    return this.get(`/v1/rooms/${encodeURIComponent(room)}`);
  }
  manage(room, action, username) {
    return this.request("POST", `/v1/rooms/${encodeURIComponent(room)}/${encodeURIComponent(action)}`, { username });
  }
  blocks() {
    return this.get("/v1/blocks").then((b) => b.blocked || []);
  }
  setBlock(user, blocked) {
    return this.request(blocked ? "PUT" : "DELETE", `/v1/blocks/${encodeURIComponent(user)}`);
  }
  unread() {
    return this.get("/v1/unread").then((b) => b.conversations || []);
  }
  members(room) {
    return this.get(`/v1/rooms/${encodeURIComponent(room)}/members`).then((b) => b.members || []);
  }
}
