// One WebSocket for every room and conversation, reconnected with backoff.
// The close code decides what happens next (README "Close codes"):
// 1008 means the token expired (sign in again); 1001, 1011 and 4000 mean
// reconnect and resume; a handshake the browser reports only as 1006 is
// probed with an authenticated GET to tell a refused token (401) from an
// outage, so a bad token never loops.

import { ApiError } from "./api.js";

const RESUME_CODES = new Set([1001, 1011, 4000]);

export class Connection {
  // opts: token, exp (ms, 0 if unknown), user, api, and the callbacks
  // onFrame(frame), onState({state, nextAt, detail}), onAuthFailed(reason).
  constructor(opts) {
    Object.assign(this, opts);
    this.ws = null;
    this.timer = null;
    this.attempts = 0;
    this.stopped = false;
    this.online = false;
    this.handshakes = 0; // attempts made (the tests read it through the page)
    this.refused = 0;    // handshakes refused in a row while the API answers (HTTP 429)
    this.lastClose = 0;  // the last close code seen
  }

  expired() {
    return this.exp > 0 && Date.now() >= this.exp - 1000;
  }

  start() {
    if (this.expired()) return this.onAuthFailed("expired");
    this.open();
  }

  open() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.stopped) return;
    if (this.expired()) return this.onAuthFailed("expired");
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    let ws;
    try {
      // The token travels as a subprotocol entry; the server selects chat.v1.
      ws = new WebSocket(`${proto}//${location.host}/ws`, ["chat.v1", "bearer." + this.token]);
    } catch (e) {
      return this.schedule(String(e));
    }
    this.handshakes++;
    this.ws = ws;
    let welcomed = false;
    this.onState({ state: "connecting" });
    ws.onmessage = (m) => {
      let f;
      try { f = JSON.parse(m.data); } catch { return; }
      if (!f || typeof f !== "object") return;
      if (f.type === "welcome") {
        welcomed = true;
        this.online = true;
        this.attempts = 0;
        this.refused = 0;
        this.onState({ state: "online" });
      }
      this.onFrame(f);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.online = false;
      this.lastClose = e.code;
      document.body.dataset.lastClose = String(e.code);
      if (this.stopped) return;
      this.closed(e.code, e.reason, welcomed);
    };
  }

  async closed(code, reason, welcomed) {
    if (code === 1008 || this.expired()) return this.onAuthFailed("expired");
    if (RESUME_CODES.has(code)) {
      // Draining or a resume problem: come back soon, spread out.
      return this.schedule(code === 1001 ? "the server is restarting" : `connection reset (${code})`, 200 + Math.random() * 800);
    }
    if (code === 1003 || code === 1007 || code === 1009) {
      return this.schedule(`the server refused a frame (${code}${reason ? ": " + reason : ""})`);
    }
    if (!welcomed) {
      // The handshake failed and the browser does not say why: ask the API.
      this.onState({ state: "checking" });
      try {
        await this.api.presence([this.user]);
      } catch (e) {
        if (this.stopped) return;
        if (e instanceof ApiError && e.status === 401) return this.onAuthFailed("rejected");
        return this.schedule("the server cannot be reached");
      }
      // The API accepts the token but the WebSocket handshake fails. A
      // draining edge answers 503 (and /readyz says so, where the page
      // can reach it): it is restarting, come back soon.
      if (this.stopped) return;
      this.refused++;
      let ready = true;
      try {
        ready = (await fetch("/readyz", { cache: "no-store" })).status !== 503;
      } catch { /* unknown: as ready */ }
      if (this.stopped) return;
      if (!ready) {
        const delay = Math.min(8000, 1000 * 2 ** (this.refused - 1)) * (0.75 + Math.random() * 0.5);
        return this.schedule("the server is restarting", delay);
      }
      // Otherwise the edge refuses connections (HTTP 429
      // too_many_connections: too many tabs or devices, or a proxy in the
      // way). Back off further on each refusal, 5 s doubling up to a
      // minute, so a refused page never loops.
      const delay = Math.min(60000, 5000 * 2 ** (this.refused - 1)) * (0.75 + Math.random() * 0.5);
      return this.schedule("the server refuses connections (too many open tabs or devices?)", delay);
    }
    this.schedule(`disconnected (${code})`);
  }

  schedule(detail, delay) {
    if (this.stopped) return;
    if (delay === undefined) {
      delay = Math.min(15000, 500 * 2 ** this.attempts) * (0.75 + Math.random() * 0.5);
      this.attempts++;
    }
    const nextAt = Date.now() + delay;
    this.onState({ state: "waiting", nextAt, detail });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), delay);
  }

  // retryNow skips the countdown.
  retryNow() {
    if (this.ws || this.stopped) return;
    this.open();
  }

  // send writes a frame if the socket is up; false when it is not.
  send(frame) {
    if (!this.online || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      this.online = false;
      ws.close(1000, "signed out");
    }
  }
}
