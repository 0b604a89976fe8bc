// Watching through a relay (docs/protocol.md#watching-through-a-relay-campeer-extension): a device that hands a viewer to its Janus relay
// refuses the offer with `busy` and adds a `relay` object saying where to
// watch instead. This module reads and checks that object (readRelay, pure,
// unit-tested in Node) and watches the stream through Janus's Streaming
// plugin over Janus's HTTP API (JanusWatch).
//
// HMAC-SHA256 comes from @noble/hashes, as in auth.ts: WebCrypto exists only
// on https: pages and localhost, and the page is often loaded over plain
// http: from the device itself.

import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { b64u, sameText } from "./auth";

/** Where and how to watch: a checked relay object, the PIN in clear. */
export interface RelayTarget {
  /** The Janus HTTP API, e.g. `http://relay.example:8088/janus`. */
  janus: string;
  /** The Streaming mountpoint's id. */
  mountpoint: number;
  /** The mountpoint's PIN (printable ASCII, at most 32 bytes). */
  pin: string;
}

export type RelayCheck = { ok: true; relay: RelayTarget } | { ok: false; why: string };

/** The longest PIN the protocol carries, in bytes. */
export const MAX_PIN_BYTES = 32;

const enc = new TextEncoder();

function hmacText(key: Uint8Array, text: string): Uint8Array {
  return hmac(sha256, key, enc.encode(text));
}

/** Decodes base64url without padding; null for anything else (padding, other characters, non-canonical tails). */
export function b64uDecode(s: string): Uint8Array | null {
  if (!/^[A-Za-z0-9_-]*$/.test(s) || s.length % 4 === 1) return null;
  let bin: string;
  try {
    bin = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (s.length % 4)) % 4));
  } catch {
    return null;
  }
  const out = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  return b64u(out) === s ? out : null;
}

/** The key stream that hides the PIN: HMAC(K, "campeer-relay-v2\n" + sid) (32 bytes). */
export function relayPad(k: Uint8Array, sid: string): Uint8Array {
  return hmacText(k, `campeer-relay-v2\n${sid}`);
}

/** pin_x: b64u(PIN XOR the first len(PIN) bytes of relayPad(K, sid)). */
export function sealPin(k: Uint8Array, sid: string, pin: string): string {
  const p = enc.encode(pin);
  if (p.length > MAX_PIN_BYTES) throw new Error(`a PIN has at most ${MAX_PIN_BYTES} bytes`);
  const pad = relayPad(k, sid);
  return b64u(p.map((b, i) => b ^ pad[i]));
}

/** relay.mac: b64u(HMAC(K, "campeer-relay-v2\n" + janus + "\n" + mountpoint + "\n" + pin_x)). */
export function relayMac(k: Uint8Array, janus: string, mountpoint: number, pinX: string): string {
  return b64u(hmacText(k, `campeer-relay-v2\n${janus}\n${mountpoint}\n${pinX}`));
}

function isPin(bytes: Uint8Array): boolean {
  return bytes.length <= MAX_PIN_BYTES && bytes.every((b) => b >= 0x20 && b <= 0x7e);
}

/** Why `janus` is not a usable Janus API address, or null when it is one. */
function badJanusUrl(janus: string): string | null {
  if (janus.length > 2048) return "janus is too long";
  let u: URL;
  try {
    u = new URL(janus);
  } catch {
    return "janus is not a URL";
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") return "janus is not an http(s) URL";
  if (u.username || u.password) return "janus carries credentials";
  if (u.search || u.hash || janus.includes("?") || janus.includes("#")) return "janus has a query or fragment";
  return null;
}

/**
 * Reads the `relay` object of an `error` message: its shape, and on a signed
 * device its mac (under the session key `k`) and encrypted PIN. `signed`
 * says whether the session is signed; `k` is its session key (null before
 * the signed offer exists, or on an open device). The message's outer mac
 * is the caller's business (auth.ts's judge).
 */
export function readRelay(v: unknown, session: { sid: string; signed: boolean; k: Uint8Array | null }): RelayCheck {
  const no = (why: string): RelayCheck => ({ ok: false, why });
  if (typeof v !== "object" || v === null || Array.isArray(v)) return no("relay is not an object");
  const r = v as Record<string, unknown>;
  if (typeof r.janus !== "string") return no("janus is missing");
  const badUrl = badJanusUrl(r.janus);
  if (badUrl) return no(badUrl);
  const m = r.mountpoint;
  if (typeof m !== "number" || !Number.isSafeInteger(m) || m <= 0) return no("mountpoint is not a positive integer");
  const janus = r.janus;
  if (!session.signed) {
    // An open device sends the PIN in clear (and has no key to mac with).
    if (typeof r.pin !== "string") return no("pin is missing");
    if (!isPin(enc.encode(r.pin))) return no(`pin is not printable ASCII of at most ${MAX_PIN_BYTES} bytes`);
    return { ok: true, relay: { janus, mountpoint: m, pin: r.pin } };
  }
  // A signed device: never a PIN in clear, only pin_x under the mac.
  const k = session.k;
  if (!k) return no("no session key");
  if (typeof r.pin_x !== "string") return no("pin_x is missing");
  if (typeof r.mac !== "string") return no("mac is missing");
  if (!sameText(r.mac, relayMac(k, janus, m, r.pin_x))) return no("its mac does not verify");
  const x = b64uDecode(r.pin_x);
  if (!x) return no("pin_x is not base64url");
  if (x.length > MAX_PIN_BYTES) return no(`pin_x is longer than ${MAX_PIN_BYTES} bytes`);
  const pad = relayPad(k, session.sid);
  const pin = x.map((b, i) => b ^ pad[i]);
  if (!isPin(pin)) return no("the PIN is not printable ASCII");
  return { ok: true, relay: { janus, mountpoint: m, pin: String.fromCharCode(...pin) } };
}

/** Whether a page at `pageProtocol` (`location.protocol`) may call `janus` (no mixed content). */
export function reachableFrom(pageProtocol: string, janus: string): boolean {
  return !(pageProtocol === "https:" && janus.startsWith("http:"));
}

// ---- the Janus Streaming client --------------------------------------------

export type RelayState = "janus" | "connecting" | "connected" | "disconnected" | "closed";

export interface RelayEvents {
  state(s: RelayState): void;
  stream(s: MediaStream): void;
  log(text: string, tone?: "ok" | "bad"): void;
  /** The relayed stream is over (not called after close()). */
  ended(message: string): void;
}

export interface RelayOptions {
  iceServers: RTCIceServer[];
  /** For tests: fetch and the peer connection. */
  fetch?: typeof fetch;
  peer?: (config: RTCConfiguration) => RTCPeerConnection;
}

/** Janus's own error (`{"janus":"error","error":{"code","reason"}}`) or a plugin's. */
export class JanusError extends Error {
  constructor(
    message: string,
    readonly code: number | null,
  ) {
    super(message);
  }
}

/** Janus forgets a session after 60 s without a request: a keepalive every 25 s. */
const KEEPALIVE_MS = 25_000;
/** Janus answers a request within 10 s, a long poll within 30 s. */
const REQUEST_TIMEOUT_MS = 12_000;
const POLL_TIMEOUT_MS = 45_000;
/** How long the answer waits for the browser's candidates before it goes with those it has. */
const GATHER_MS = 2_000;
const NO_SUCH_SESSION = 458;
const SLOWLINK_LOG_EVERY_MS = 10_000;

type Json = Record<string, unknown>;

function obj(v: unknown): Json | null {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Json) : null;
}

function transaction(): string {
  const b = new Uint8Array(9);
  crypto.getRandomValues(b);
  return b64u(b);
}

function errText(e: unknown): string {
  if (e instanceof Error && e.name === "AbortError") return "timed out";
  return e instanceof Error ? e.message : String(e);
}

/**
 * Watches one mountpoint through Janus's Streaming plugin, over its HTTP
 * API: create a session, attach the plugin, `watch` with the PIN, answer
 * the offer Janus sends (`start`), keep the session alive, and end (once)
 * when anything fails or Janus ends the stream.
 */
export class JanusWatch {
  readonly startedAt = performance.now();
  state: RelayState = "janus";
  /** Janus's session and handle ids, once created. */
  session: number | null = null;
  handle: number | null = null;

  private readonly base: string;
  private readonly fetch: typeof fetch;
  private pc: RTCPeerConnection | null = null;
  private stream: MediaStream | null = null;
  private done = false;
  private keepalive: ReturnType<typeof setInterval> | null = null;
  private poll: AbortController | null = null;
  /** The answer went out: later local candidates trickle. */
  private answerSent = false;
  private lastSlowlinkLog = -Infinity;

  constructor(
    readonly target: RelayTarget,
    private readonly opts: RelayOptions,
    private readonly ev: RelayEvents,
  ) {
    this.base = target.janus.replace(/\/+$/, "");
    this.fetch = opts.fetch ?? ((input, init) => fetch(input, init));
  }

  /** The peer connection, for getStats(); null before Janus's offer. */
  get peer(): RTCPeerConnection | null {
    return this.pc;
  }

  private get sessionUrl(): string {
    return `${this.base}/${this.session}`;
  }

  private get handleUrl(): string {
    return `${this.base}/${this.session}/${this.handle}`;
  }

  async start(): Promise<void> {
    try {
      const created = await this.post(this.base, { janus: "create" });
      this.session = dataId(created);
      if (this.done) {
        this.destroy();
        return;
      }
      const attached = await this.post(this.sessionUrl, { janus: "attach", plugin: "janus.plugin.streaming" });
      this.handle = dataId(attached);
      if (this.done) return;
      this.keepalive = setInterval(() => this.sendKeepalive(), KEEPALIVE_MS);
      void this.pollLoop();
      const body: Json = { request: "watch", id: this.target.mountpoint };
      if (this.target.pin) body.pin = this.target.pin;
      await this.post(this.handleUrl, { janus: "message", body });
      if (!this.done) this.ev.log(`asked to watch mountpoint ${this.target.mountpoint}`);
    } catch (e) {
      this.end(`${this.target.janus}: ${errText(e)}`);
    }
  }

  /** Ends the watch from this side: tells Janus (best effort). */
  close(): void {
    if (this.done) return;
    this.done = true;
    this.teardown();
  }

  private end(message: string): void {
    if (this.done) return;
    this.done = true;
    this.teardown();
    this.ev.ended(message);
  }

  private teardown(): void {
    if (this.keepalive) clearInterval(this.keepalive);
    this.keepalive = null;
    this.poll?.abort();
    this.poll = null;
    for (const t of this.stream?.getTracks() ?? []) t.stop();
    try {
      this.pc?.close();
    } catch {
      /* already closed */
    }
    this.destroy();
    this.state = "closed";
  }

  /** Destroys the Janus session, which hangs up and detaches everything in it. */
  private destroy(): void {
    if (this.session === null) return;
    const url = this.sessionUrl;
    this.session = null;
    // keepalive: the request outlives a page being closed.
    void this.fetch(url, { method: "POST", body: JSON.stringify({ janus: "destroy", transaction: transaction() }), keepalive: true }).catch(
      () => {},
    );
  }

  /**
   * A request to Janus. The body goes as text/plain (Janus does not look at
   * the type), which keeps the cross-origin request simple: no preflight.
   */
  private async post(url: string, msg: Json, extra: Json = {}): Promise<Json> {
    const body = JSON.stringify({ ...msg, transaction: transaction(), ...extra });
    const reply = await this.call(url, { method: "POST", body }, REQUEST_TIMEOUT_MS);
    const r = obj(reply);
    if (!r) throw new Error("malformed reply");
    if (r.janus === "error") {
      const e = obj(r.error);
      const code = typeof e?.code === "number" ? e.code : null;
      throw new JanusError(`${typeof e?.reason === "string" ? e.reason : "error"}${code !== null ? ` (${code})` : ""}`, code);
    }
    return r;
  }

  private async call(url: string, init: RequestInit, timeoutMs: number, abort = new AbortController()): Promise<unknown> {
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    try {
      const r = await this.fetch(url, { ...init, cache: "no-store", signal: abort.signal });
      if (r.status === 404) throw new JanusError("no such session (HTTP 404)", NO_SUCH_SESSION);
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      return await r.json();
    } finally {
      clearTimeout(timer);
    }
  }

  private sendKeepalive(): void {
    if (this.done || this.session === null) return;
    this.post(this.sessionUrl, { janus: "keepalive" }).catch((e) => this.end(`keepalive: ${errText(e)}`));
  }

  /** Janus's events, one long poll at a time, until the watch ends. */
  private async pollLoop(): Promise<void> {
    while (!this.done && this.session !== null) {
      const abort = new AbortController();
      this.poll = abort;
      let reply: unknown;
      try {
        reply = await this.call(`${this.sessionUrl}?rid=${Date.now()}&maxev=1`, { method: "GET" }, POLL_TIMEOUT_MS, abort);
      } catch (e) {
        if (!this.done) this.end(`events: ${errText(e)}`);
        return;
      }
      if (this.done) return;
      for (const m of Array.isArray(reply) ? reply : [reply]) {
        await this.onEvent(obj(m));
        if (this.done) return;
      }
    }
  }

  private async onEvent(m: Json | null): Promise<void> {
    if (!m) return;
    switch (m.janus) {
      case "keepalive":
      case "ack":
      case "success":
        return;
      case "error": {
        const e = obj(m.error);
        this.end(`Janus error: ${typeof e?.reason === "string" ? e.reason : "unknown"} (${String(e?.code ?? "?")})`);
        return;
      }
      case "event":
        await this.onPluginEvent(m);
        return;
      case "trickle":
        await this.onRemoteCandidate(obj(m.candidate));
        return;
      case "webrtcup":
        this.ev.log("the relay's WebRTC is up", "ok");
        return;
      case "media":
        // About what Janus receives from this page, which sends nothing:
        // worth a line in the log, no more.
        this.ev.log(`Janus: ${typeof m.type === "string" ? m.type : "media"} ${m.receiving === false ? "not " : ""}receiving`);
        return;
      case "slowlink": {
        const now = performance.now();
        if (now - this.lastSlowlinkLog >= SLOWLINK_LOG_EVERY_MS) {
          this.lastSlowlinkLog = now;
          this.ev.log(`the relay reports a slow link${typeof m.lost === "number" ? ` (${m.lost} packets lost)` : ""}`, "bad");
        }
        return;
      }
      case "hangup":
        this.end(`the relay hung up${typeof m.reason === "string" ? ` (${m.reason})` : ""}`);
        return;
      case "detached":
        this.end("the relay detached the stream");
        return;
      case "timeout":
        this.end("the relay timed the session out");
        return;
      default:
        return;
    }
  }

  private async onPluginEvent(m: Json): Promise<void> {
    const data = obj(obj(m.plugindata)?.data);
    if (data && (data.error !== undefined || data.error_code !== undefined)) {
      const why = typeof data.error === "string" ? data.error : "error";
      this.end(`the relay refused: ${why}${typeof data.error_code === "number" ? ` (${data.error_code})` : ""}`);
      return;
    }
    const status = obj(data?.result)?.status;
    if (status === "stopped") {
      this.end("the relay's stream stopped");
      return;
    }
    const jsep = obj(m.jsep);
    if (jsep?.type === "offer" && typeof jsep.sdp === "string") {
      await this.answer(jsep.sdp);
      return;
    }
    if (typeof status === "string") this.ev.log(`relay stream ${status}`);
  }

  private makePeer(): RTCPeerConnection {
    const config: RTCConfiguration = { iceServers: this.opts.iceServers };
    const pc = this.opts.peer ? this.opts.peer(config) : new RTCPeerConnection(config);
    pc.addEventListener("track", (e) => {
      if (this.done) return;
      this.stream ??= new MediaStream();
      if (!this.stream.getTracks().includes(e.track)) this.stream.addTrack(e.track);
      this.ev.stream(this.stream);
    });
    pc.addEventListener("icecandidate", (e) => {
      // Before the answer went out, candidates travel in its SDP.
      if (this.done || !this.answerSent) return;
      if (e.candidate && !e.candidate.candidate) return;
      const c = e.candidate
        ? { candidate: e.candidate.candidate, sdpMid: e.candidate.sdpMid, sdpMLineIndex: e.candidate.sdpMLineIndex }
        : { completed: true };
      this.post(this.handleUrl, { janus: "trickle", candidate: c }).catch(() => {});
    });
    pc.addEventListener("connectionstatechange", () => {
      if (this.done) return;
      const s = pc.connectionState;
      if (s === "connected") this.setState("connected");
      else if (s === "disconnected") this.setState("disconnected");
      else if (s === "failed") this.end("ICE to the relay failed");
      else if (s === "closed") this.end("the connection to the relay closed");
    });
    return pc;
  }

  /** Answers Janus's offer (the first, or a renegotiation) with `start`. */
  private async answer(sdp: string): Promise<void> {
    this.pc ??= this.makePeer();
    const pc = this.pc;
    let local: string;
    let complete: boolean;
    try {
      await pc.setRemoteDescription({ type: "offer", sdp });
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      complete = await gathered(pc, GATHER_MS);
      if (this.done) return;
      local = pc.localDescription?.sdp ?? answer.sdp ?? "";
    } catch (e) {
      this.end(`the relay's offer was refused: ${errText(e)}`);
      return;
    }
    // The candidates so far are in `local`; those still to come trickle.
    this.answerSent = true;
    this.setState("connecting");
    const jsep: Json = { type: "answer", sdp: local };
    if (complete) jsep.trickle = false;
    try {
      await this.post(this.handleUrl, { janus: "message", body: { request: "start" } }, { jsep });
    } catch (e) {
      this.end(`start: ${errText(e)}`);
    }
  }

  private async onRemoteCandidate(c: Json | null): Promise<void> {
    const pc = this.pc;
    if (!pc || !c) return;
    try {
      if (c.completed === true) await pc.addIceCandidate();
      else if (typeof c.candidate === "string") await pc.addIceCandidate(c as RTCIceCandidateInit);
    } catch {
      /* a candidate the browser cannot use is not fatal */
    }
  }

  private setState(s: RelayState): void {
    if (this.state === s || this.done) return;
    this.state = s;
    this.ev.state(s);
  }
}

/** `data.id` of Janus's `success` reply (a session or handle id). */
function dataId(r: Json): number {
  const id = obj(r.data)?.id;
  if (r.janus !== "success" || typeof id !== "number" || !Number.isSafeInteger(id) || id <= 0) {
    throw new Error(`unexpected reply ${JSON.stringify(r).slice(0, 120)}`);
  }
  return id;
}

/** Waits until ICE gathering completes, at most `ms`; says whether it did. */
function gathered(pc: RTCPeerConnection, ms: number): Promise<boolean> {
  if (pc.iceGatheringState === "complete") return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve(pc.iceGatheringState === "complete");
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    const timer = setTimeout(done, ms);
    pc.addEventListener("icegatheringstatechange", check);
  });
}
