// The campeer wire protocol, version 1 (PROTOCOL.md): topics, signaling
// messages and offer signatures. Pure functions, no DOM: unit-tested in Node.

import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";

/** What /config.json carries (src/web/mod.rs, PageConfig). */
export interface PageConfig {
  device_id: string;
  prefix: string;
  ws_url: string | null;
  ws_port: number | null;
  ws_path: string;
  auth: string;
  ice_servers?: RTCIceServer[];
}

/** Presence, PROTOCOL.md section 4. */
export interface Presence {
  state: "online" | "offline";
  device: string;
  version?: string;
  sessions?: number;
  max_sessions?: number;
  auth?: "open" | "signed";
  video?: { codec: string; width: number; height: number; fps: number } | null;
  audio?: { codec: string; rate: number; channels: number } | null;
  controls?: { name: string; direction: "input" | "output" }[];
}

export type Role = "view" | "control";

/** An access key as the user entered it. */
export interface AccessKey {
  id: string;
  secret: string;
  role: Role;
}

/** Device-to-viewer messages, PROTOCOL.md section 3. */
export type OutMessage =
  | { type: "answer"; sdp: string }
  | { type: "candidate"; candidate: RTCIceCandidateInit | null }
  | { type: "bye"; reason: string }
  | { type: "error"; code: string; message: string };

export class Topics {
  readonly base: string;
  constructor(prefix: string, deviceId: string) {
    this.base = `${prefix}/${deviceId}`;
  }
  get status(): string {
    return `${this.base}/status`;
  }
  in(sid: string): string {
    return `${this.base}/session/${sid}/in`;
  }
  out(sid: string): string {
    return `${this.base}/session/${sid}/out`;
  }
}

const SID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** A random session id: 22 characters of [A-Za-z0-9_-], 132 bits. */
export function newSid(): string {
  const bytes = new Uint8Array(22);
  crypto.getRandomValues(bytes);
  let s = "";
  for (const b of bytes) s += SID_ALPHABET[b & 63];
  return s;
}

export function isValidSid(sid: string): boolean {
  return /^[A-Za-z0-9_-]{8,64}$/.test(sid);
}

function base64url(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * PROTOCOL.md section 5: base64url (no padding) of HMAC-SHA256(secret,
 * "campeer-offer-v1\n" + device_id + "\n" + sid + "\n" + role + "\n" + sdp).
 * Pure JavaScript: WebCrypto is missing on plain-http pages.
 */
export function signOffer(secret: string, deviceId: string, sid: string, role: Role, sdp: string): string {
  const enc = new TextEncoder();
  const message = enc.encode(`campeer-offer-v1\n${deviceId}\n${sid}\n${role}\n${sdp}`);
  return base64url(hmac(sha256, enc.encode(secret), message));
}

/** The offer message, signed when `key` is given. */
export function offerMessage(sdp: string, deviceId: string, sid: string, key: AccessKey | null): string {
  const msg: Record<string, unknown> = { type: "offer", sdp };
  if (key) {
    msg.auth = { key: key.id, role: key.role, sig: signOffer(key.secret, deviceId, sid, key.role, sdp) };
  }
  return JSON.stringify(msg);
}

export function candidateMessage(c: RTCIceCandidateInit | null): string {
  return JSON.stringify({ type: "candidate", candidate: c });
}

export function byeMessage(): string {
  return JSON.stringify({ type: "bye" });
}

/** Parses a message from an `out` topic; null when it is not one. */
export function parseOut(payload: Uint8Array | string): OutMessage | null {
  let v: unknown;
  try {
    v = JSON.parse(typeof payload === "string" ? payload : new TextDecoder().decode(payload));
  } catch {
    return null;
  }
  if (typeof v !== "object" || v === null) return null;
  const m = v as Record<string, unknown>;
  switch (m.type) {
    case "answer":
      return typeof m.sdp === "string" ? { type: "answer", sdp: m.sdp } : null;
    case "candidate": {
      const c = m.candidate;
      if (c === null) return { type: "candidate", candidate: null };
      if (typeof c !== "object" || c === undefined || typeof (c as RTCIceCandidateInit).candidate !== "string") return null;
      return { type: "candidate", candidate: c as RTCIceCandidateInit };
    }
    case "bye":
      return { type: "bye", reason: typeof m.reason === "string" ? m.reason : "closed" };
    case "error":
      return {
        type: "error",
        code: typeof m.code === "string" ? m.code : "internal",
        message: typeof m.message === "string" ? m.message : "",
      };
    default:
      return null;
  }
}

/** Parses a status message; null when it is not presence. */
export function parsePresence(payload: Uint8Array | string): Presence | null {
  try {
    const v = JSON.parse(typeof payload === "string" ? payload : new TextDecoder().decode(payload));
    if (typeof v === "object" && v !== null && (v.state === "online" || v.state === "offline")) return v as Presence;
  } catch {
    /* not JSON */
  }
  return null;
}

/**
 * The broker's WebSocket URL for this page: the configured one, or the
 * page's own host on the configured port and path.
 */
export function brokerUrl(cfg: PageConfig, loc: { protocol: string; hostname: string; port: string }): string {
  if (cfg.ws_url) return cfg.ws_url;
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  let host = loc.hostname;
  if (host.includes(":") && !host.startsWith("[")) host = `[${host}]`;
  const port = cfg.ws_port ?? (loc.port ? Number(loc.port) : null);
  const path = cfg.ws_path.startsWith("/") ? cfg.ws_path : `/${cfg.ws_path}`;
  return `${scheme}//${host}${port ? `:${port}` : ""}${path}`;
}
