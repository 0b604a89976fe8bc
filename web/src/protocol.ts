// The campeer wire protocol, version 2 (docs/protocol.md): topics, signaling
// messages, presence. Pure functions, no DOM: unit-tested in Node. The
// authorization pieces (signatures, macs) are in auth.ts.

import { AccessKey, Role, WireCandidate, messageMac, signOffer } from "./auth";

/** What /config.json carries (the daemon's PageConfig). */
export interface PageConfig {
  device_id: string;
  prefix: string;
  ws_url: string | null;
  ws_port: number | null;
  ws_path: string;
  /** `open` or `signed`. */
  auth: string;
  /** Fallback STUN/TURN servers, used when the device has no ice.json. */
  ice_servers?: RTCIceServer[];
  /** The broker is the device's own: log in with the key (missing = false). */
  own_broker?: boolean;
  /** The device's claim window is open (missing = false). */
  claimable?: boolean;
}

/** Presence, docs/protocol.md#finding-devices-presence. */
export interface Presence {
  state: "online" | "offline";
  device: string;
  version?: string;
  protocol?: number;
  sessions?: number;
  max_sessions?: number;
  auth?: "open" | "signed";
  /** The current offer nonce of a signed device. */
  nonce?: string;
  video?: { codec: string; width: number; height: number; fps: number } | null;
  audio?: { codec: string; rate: number; channels: number } | null;
  controls?: { name: string; direction: "input" | "output" }[];
}

/** Device-to-viewer messages, docs/protocol.md#opening-a-session, with their `mac` when they carry one. */
export type OutMessage =
  | { type: "answer"; sdp: string; mac: string | null }
  | { type: "candidate"; candidate: WireCandidate | null; mac: string | null }
  | { type: "bye"; reason: string | null; mac: string | null }
  | {
      type: "error";
      code: string;
      message: string;
      mac: string | null;
      /** A `busy` that hands the viewer to the device's relay: the raw object, checked by relay.ts. */
      relay?: unknown;
    };

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

/** How an offer is signed: the key, the role asked for and the device's nonce. */
export interface OfferAuth {
  key: AccessKey;
  role: Role;
  nonce: string;
}

/**
 * The offer message, signed when `auth` is given; `sig` is the signature
 * (the session key derives from it), null for an unsigned offer.
 */
export function offerMessage(
  sdp: string,
  deviceId: string,
  sid: string,
  auth: OfferAuth | null,
): { json: string; sig: string | null } {
  if (!auth) return { json: JSON.stringify({ type: "offer", sdp }), sig: null };
  const sig = signOffer(auth.key.secret, deviceId, sid, auth.role, auth.nonce, sdp);
  const msg = { type: "offer", sdp, auth: { key: auth.key.id, role: auth.role, nonce: auth.nonce, sig } };
  return { json: JSON.stringify(msg), sig };
}

/** A `candidate` message, mac'd with the session key `k` when there is one. */
export function candidateMessage(c: WireCandidate | null, k: Uint8Array | null): string {
  const msg: Record<string, unknown> = { type: "candidate", candidate: c };
  if (k) msg.mac = messageMac(k, "in", { type: "candidate", candidate: c });
  return JSON.stringify(msg);
}

/** A `bye` message (no reason), mac'd with the session key `k` when there is one. */
export function byeMessage(k: Uint8Array | null): string {
  const msg: Record<string, unknown> = { type: "bye" };
  if (k) msg.mac = messageMac(k, "in", { type: "bye", reason: null });
  return JSON.stringify(msg);
}

function optString(v: unknown): v is string | null | undefined {
  return v === undefined || v === null || typeof v === "string";
}

/** A candidate object as the protocol allows it; null when it is not one. */
function wireCandidate(v: unknown): WireCandidate | null {
  if (typeof v !== "object" || v === null) return null;
  const c = v as Record<string, unknown>;
  if (typeof c.candidate !== "string" || !optString(c.sdpMid) || !optString(c.usernameFragment)) return null;
  const i = c.sdpMLineIndex;
  if (!(i === undefined || i === null || (typeof i === "number" && Number.isInteger(i) && i >= 0 && i <= 65535))) return null;
  return c as unknown as WireCandidate;
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
  if (m.mac !== undefined && typeof m.mac !== "string") return null;
  const mac = typeof m.mac === "string" ? m.mac : null;
  switch (m.type) {
    case "answer":
      return typeof m.sdp === "string" ? { type: "answer", sdp: m.sdp, mac } : null;
    case "candidate": {
      if (m.candidate === null) return { type: "candidate", candidate: null, mac };
      const c = wireCandidate(m.candidate);
      return c ? { type: "candidate", candidate: c, mac } : null;
    }
    case "bye":
      if (!optString(m.reason)) return null;
      return { type: "bye", reason: m.reason ?? null, mac };
    case "error":
      if (typeof m.code !== "string" || !optString(m.message)) return null;
      if (m.relay !== undefined && m.relay !== null) return { type: "error", code: m.code, message: m.message ?? "", mac, relay: m.relay };
      return { type: "error", code: m.code, message: m.message ?? "", mac };
    default:
      return null;
  }
}

/** Parses a status message; null when it is not presence. A malformed nonce is dropped. */
export function parsePresence(payload: Uint8Array | string): Presence | null {
  try {
    const v = JSON.parse(typeof payload === "string" ? payload : new TextDecoder().decode(payload));
    if (typeof v === "object" && v !== null && (v.state === "online" || v.state === "offline")) {
      if (v.nonce !== undefined && (typeof v.nonce !== "string" || !/^[A-Za-z0-9_-]{1,256}$/.test(v.nonce))) delete v.nonce;
      return v as Presence;
    }
  } catch {
    /* not JSON */
  }
  return null;
}

/**
 * Whether the page treats the device as signed. config.json comes from the
 * device together with the page's own code, so it is trusted as much as the
 * page; the retained status may come from anyone who can publish on a shared
 * broker. So the stricter of the two wins: the device is open only when
 * config.json says `open` and the status does not say `signed`. A status
 * saying `open` can therefore never talk the page out of signing.
 */
export function effectiveAuth(configAuth: string | undefined, presenceAuth: string | undefined): "open" | "signed" {
  return configAuth === "open" && presenceAuth !== "signed" ? "open" : "signed";
}

/** The servers of an `ice.json` reply (`{"ice_servers":[RTCIceServer...]}`); null when malformed. */
export function parseIceServers(v: unknown): RTCIceServer[] | null {
  if (typeof v !== "object" || v === null) return null;
  const list = (v as Record<string, unknown>).ice_servers;
  if (!Array.isArray(list) || list.length > 32) return null;
  const out: RTCIceServer[] = [];
  for (const s of list) {
    if (typeof s !== "object" || s === null) return null;
    const { urls, username, credential } = s as Record<string, unknown>;
    const urlList = typeof urls === "string" ? [urls] : urls;
    if (!Array.isArray(urlList) || urlList.length === 0 || !urlList.every((u) => typeof u === "string")) return null;
    if (!optString(username) || !optString(credential)) return null;
    const server: RTCIceServer = { urls: urlList as string[] };
    if (typeof username === "string") server.username = username;
    if (typeof credential === "string") server.credential = credential;
    out.push(server);
  }
  return out;
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
