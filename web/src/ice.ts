// ICE servers over signaling (docs/protocol.md#ice-servers-for-viewers-ice_request): the page asks the
// device for its STUN/TURN servers on a sid of their own before it offers,
// and takes them only when the reply's mac verifies under K_ice (signed
// devices) or when an open device sends them in clear. Pure functions, no
// DOM: unit-tested in Node.
//
// HMAC-SHA256 comes from @noble/hashes, as in auth.ts: WebCrypto exists
// only on https: pages and localhost, and the page is often loaded over
// plain http: from the device itself.

import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { AccessKey, b64u, sameText } from "./auth";
import { parseIceServers } from "./protocol";

const enc = new TextEncoder();

/** Largest servers JSON a device sends, bytes (the protocol's limit). */
const MAX_SERVERS_JSON = 4096;

function hmacText(key: Uint8Array, text: string): Uint8Array {
  return hmac(sha256, key, enc.encode(text));
}

/** base64url without padding, back to bytes; null when it is not that. */
export function fromB64u(text: string): Uint8Array | null {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) return null;
  const bin = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "==".slice(0, (4 - (text.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** b64u(HMAC(secret, "campeer-ice-v2\n" + device_id + "\n" + sid + "\n" + nonce)). */
export function signIce(secret: string, deviceId: string, sid: string, nonce: string): string {
  return b64u(hmacText(enc.encode(secret), `campeer-ice-v2\n${deviceId}\n${sid}\n${nonce}`));
}

/** K_ice: the 32 raw bytes of HMAC(secret, "campeer-ice-key-v2\n" + sig). */
export function iceKey(secret: string, sig: string): Uint8Array {
  return hmacText(enc.encode(secret), `campeer-ice-key-v2\n${sig}`);
}

/** XORs `bytes` in place with the reply's keystream for `sid` under K_ice. */
export function iceStreamXor(k: Uint8Array, sid: string, bytes: Uint8Array): void {
  for (let i = 0; i * 32 < bytes.length; i++) {
    const block = hmacText(k, `campeer-ice-stream-v2\n${sid}\n${i}`);
    for (let j = 0; j < 32 && i * 32 + j < bytes.length; j++) bytes[i * 32 + j] ^= block[j];
  }
}

/** The reply's mac: b64u(HMAC(K_ice, "campeer-msg-v2\nout\nice\n" + servers_x + "\n" + expires)). */
export function iceMac(k: Uint8Array, serversX: string, expires: number): string {
  return b64u(hmacText(k, `campeer-msg-v2\nout\nice\n${serversX}\n${expires}`));
}

/**
 * The `ice_request` for `sid`, signed with the key over the device's nonce
 * (`auth` null on an open device), and K_ice to open the reply with.
 */
export function iceRequest(
  deviceId: string,
  sid: string,
  auth: { key: AccessKey; nonce: string } | null,
): { json: string; k: Uint8Array | null } {
  if (!auth) return { json: JSON.stringify({ type: "ice_request" }), k: null };
  const sig = signIce(auth.key.secret, deviceId, sid, auth.nonce);
  const msg = { type: "ice_request", auth: { key: auth.key.id, nonce: auth.nonce, sig } };
  return { json: JSON.stringify(msg), k: iceKey(auth.key.secret, sig) };
}

/** What the device said on the request's `out` topic. */
export type IceAnswer =
  | { type: "ice"; serversX: string | null; servers: unknown; expires: number; mac: string | null }
  | { type: "error"; code: string; message: string };

/** Parses a message on the request's `out` topic; null for anything else. */
export function parseIceAnswer(payload: Uint8Array | string): IceAnswer | null {
  let v: unknown;
  try {
    v = JSON.parse(typeof payload === "string" ? payload : new TextDecoder().decode(payload));
  } catch {
    return null;
  }
  if (typeof v !== "object" || v === null) return null;
  const m = v as Record<string, unknown>;
  if (m.type === "error") {
    if (typeof m.code !== "string") return null;
    return { type: "error", code: m.code, message: typeof m.message === "string" ? m.message : "" };
  }
  if (m.type !== "ice") return null;
  const expires = m.expires;
  if (typeof expires !== "number" || !Number.isSafeInteger(expires) || expires < 0) return null;
  const serversX = typeof m.servers_x === "string" ? m.servers_x : null;
  const mac = typeof m.mac === "string" ? m.mac : null;
  return { type: "ice", serversX, servers: m.servers, expires, mac };
}

/** The servers of an `ice` reply, or why they are not used. */
export type IceOpened = { ok: true; servers: RTCIceServer[]; expires: number } | { ok: false; why: string };

/**
 * Opens an `ice` reply: with K_ice (signed) only when its mac verifies,
 * then the servers decrypted and checked; without (`k` null, an open
 * device) the servers in clear.
 */
export function openIce(k: Uint8Array | null, sid: string, a: Extract<IceAnswer, { type: "ice" }>): IceOpened {
  let list: unknown = a.servers;
  if (k) {
    if (a.serversX === null || a.mac === null) return { ok: false, why: "the reply is not sealed for this key" };
    if (!sameText(a.mac, iceMac(k, a.serversX, a.expires))) return { ok: false, why: "the reply's mac does not verify" };
    const bytes = fromB64u(a.serversX);
    if (!bytes || bytes.length > MAX_SERVERS_JSON) return { ok: false, why: "servers_x is malformed" };
    iceStreamXor(k, sid, bytes);
    try {
      list = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
    } catch {
      return { ok: false, why: "the servers are not JSON" };
    }
  }
  const servers = parseIceServers({ ice_servers: list });
  if (!servers) return { ok: false, why: "the servers are not a list of RTCIceServer" };
  return { ok: true, servers, expires: a.expires };
}

/** Servers without an expiry are asked for again after this long, s. */
export const ICE_NO_EXPIRY_KEEP_S = 600;
/** Servers are not used for a new session this close to their expiry, s. */
export const ICE_EXPIRY_MARGIN_S = 30;

/**
 * Whether servers got at `gotAt` (Unix s) that expire at `expires` (Unix
 * s, 0: never) may still be used for a new session at `now` (Unix s).
 */
export function iceUsable(expires: number, gotAt: number, now: number): boolean {
  if (now < gotAt) return false; // the clock went back: ask again
  if (expires === 0) return now - gotAt < ICE_NO_EXPIRY_KEEP_S;
  return now + ICE_EXPIRY_MARGIN_S < expires;
}
