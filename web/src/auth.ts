// Authorization, wire protocol version 2 (docs/protocol.md#authorization-protocol-version-2): offer
// signatures over the device's nonce, the session key, the per-message macs
// in both directions, the broker password, and the rule for which device
// messages the page may act on. Pure functions, no DOM: unit-tested in Node.
//
// HMAC-SHA256 comes from @noble/hashes, not WebCrypto: browsers offer
// WebCrypto only on https: pages and localhost, and the page is often
// loaded over plain http: from the device itself.

import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";

export type Role = "view" | "control";

/** An access key: its id and its secret (text). */
export interface AccessKey {
  id: string;
  secret: string;
}

/** Which way a session message travels: viewer to device, or back. */
export type Direction = "in" | "out";

const enc = new TextEncoder();

/** base64url without padding. */
export function b64u(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function hmacText(key: Uint8Array, text: string): Uint8Array {
  return hmac(sha256, key, enc.encode(text));
}

/**
 * The offer signature: b64u(HMAC(secret, "campeer-offer-v2\n" + device_id +
 * "\n" + sid + "\n" + role + "\n" + nonce + "\n" + sdp)).
 */
export function signOffer(secret: string, deviceId: string, sid: string, role: Role, nonce: string, sdp: string): string {
  return b64u(hmacText(enc.encode(secret), `campeer-offer-v2\n${deviceId}\n${sid}\n${role}\n${nonce}\n${sdp}`));
}

/** The session key K: the 32 raw bytes of HMAC(secret, "campeer-session-v2\n" + sig). */
export function sessionKey(secret: string, sig: string): Uint8Array {
  return hmacText(enc.encode(secret), `campeer-session-v2\n${sig}`);
}

/** The MQTT password for the device's own broker (the user name is the key id). */
export function mqttPassword(secret: string, deviceId: string): string {
  return b64u(hmacText(enc.encode(secret), `campeer-mqtt-v2\n${deviceId}`));
}

/** A candidate as it travels in a `candidate` message; null ends the candidates. */
export interface WireCandidate {
  candidate: string;
  sdpMid?: string | null;
  sdpMLineIndex?: number | null;
  usernameFragment?: string | null;
}

/** The text a `candidate` message's mac covers (usernameFragment is not covered). */
export function candidateBody(c: WireCandidate | null): string {
  if (c === null) return "end";
  const mid = c.sdpMid ?? "";
  const index = c.sdpMLineIndex === null || c.sdpMLineIndex === undefined ? "" : String(c.sdpMLineIndex);
  return `${c.candidate}\n${mid}\n${index}`;
}

/** A message of a session other than the offer, reduced to what its mac covers. */
export type MacSubject =
  | { type: "answer"; sdp: string }
  | { type: "candidate"; candidate: WireCandidate | null }
  | { type: "bye"; reason?: string | null }
  | { type: "error"; code: string };

/** The `body` of docs/protocol.md#authorization-protocol-version-2's table. */
export function macBody(m: MacSubject): string {
  switch (m.type) {
    case "answer":
      return m.sdp;
    case "candidate":
      return candidateBody(m.candidate);
    case "bye":
      return m.reason ?? "";
    case "error":
      return m.code;
  }
}

/** b64u(HMAC-SHA256(K, "campeer-msg-v2\n" + dir + "\n" + type + "\n" + body)). */
export function messageMac(k: Uint8Array, dir: Direction, m: MacSubject): string {
  return b64u(hmacText(k, `campeer-msg-v2\n${dir}\n${m.type}\n${macBody(m)}`));
}

/** Compares two texts in time independent of where they differ. */
export function sameText(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return d === 0;
}

/** Whether a device-to-viewer message carries a mac that verifies under K. */
export function verifies(k: Uint8Array, m: MacSubject, mac: string | null | undefined): boolean {
  return typeof mac === "string" && sameText(mac, messageMac(k, "out", m));
}

/**
 * What the page does with a message from the device:
 * - `apply`: act on it (a verified message, or any message of an open session);
 * - `ignore`: drop it and count it as unverified;
 * - `unverified-error`: an `error` without a valid mac while the session has
 *   no verified answer yet (an offer refusal, which cannot carry a mac): the
 *   page may show it and give up on this attempt, marked unverified.
 * A message that does not verify therefore never ends a session that has a
 * verified answer.
 *
 * `signed` is false for a session on an open device (no macs at all); `k` is
 * the session key, null until the signed offer exists (nothing verifies
 * then); `answered` says whether the session has a verified answer.
 */
export type Verdict = "apply" | "ignore" | "unverified-error";

export function judge(
  m: MacSubject & { mac?: string | null },
  session: { signed: boolean; k: Uint8Array | null; answered: boolean },
): Verdict {
  if (!session.signed) return "apply";
  if (session.k !== null && verifies(session.k, m, m.mac)) return "apply";
  if (m.type === "error" && !session.answered) return "unverified-error";
  return "ignore";
}

/**
 * The role a key offers with. A pairing link carries no role: the page
 * offers `control` first; when the device refuses that with `unauthorized`
 * it tries `view` once. A refused `view` means the key itself is refused
 * (revoked or wrong): the page stops there, it never loops on
 * `unauthorized`.
 *
 * Only verified messages count for the role the page keeps: an offer
 * refusal usually carries no mac (there is no session key yet), so anyone
 * who can publish on the session's topic could forge one. After an
 * unverified refusal of `control` the page still tries `view` (it has to,
 * for a view key to work at all), but a `view` accepted then is used for
 * this page's life only and never stored: the next load offers `control`
 * again, and a forged refusal cannot leave a lasting downgrade. A `view`
 * is stored only after a verified refusal of `control`.
 */
export class RoleLadder {
  private role: Role;
  /** Whether the device itself (a verified message) put the key at `view`. */
  private viewProven: boolean;

  constructor(stored: Role | null) {
    this.role = stored ?? "control";
    this.viewProven = stored === "view";
  }

  /** The role to offer with now. */
  get current(): Role {
    return this.role;
  }

  /**
   * The device refused the offer `unauthorized` (`verified`: the refusal's
   * mac verified): try another role, or give up.
   */
  refused(verified: boolean): "retry" | "key-refused" {
    if (this.role === "control") {
      this.role = "view";
      this.viewProven = verified;
      return "retry";
    }
    return "key-refused";
  }

  /**
   * The device accepted an offer (a verified answer): the role to store for
   * the key, or null to store nothing (a `view` reached through an
   * unverified refusal).
   */
  accepted(): Role | null {
    return this.role === "view" && !this.viewProven ? null : this.role;
  }
}
