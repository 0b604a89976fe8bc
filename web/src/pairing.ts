// Pairing links (docs/protocol.md#authorization-protocol-version-2): `<page URL>#pair=<id>.<secret>`,
// and the key the page keeps for a device. Pure functions, no DOM.

import type { AccessKey, Role } from "./auth";

const KEY_ID = /^[a-z0-9][a-z0-9_-]{0,62}$/;
/** Longer secrets than this are not something `campeer pair` or a person made. */
const MAX_SECRET = 1024;

export function isValidKeyId(id: string): boolean {
  return KEY_ID.test(id);
}

/**
 * Parses `<id>.<secret>`: the id is everything before the first dot, the
 * secret everything after it (a secret may contain dots).
 */
export function parseKeyText(text: string): AccessKey | null {
  const dot = text.indexOf(".");
  if (dot < 0) return null;
  const id = text.slice(0, dot);
  const secret = text.slice(dot + 1);
  if (!isValidKeyId(id) || secret.length === 0 || secret.length > MAX_SECRET) return null;
  return { id, secret };
}

/**
 * The `pair=` value of a URL fragment (with or without its `#`), percent-
 * decoded; null when the fragment has none. Other `&`-separated parts are
 * left alone.
 */
export function pairValueOfFragment(fragment: string): string | null {
  const f = fragment.startsWith("#") ? fragment.slice(1) : fragment;
  for (const part of f.split("&")) {
    if (!part.startsWith("pair=")) continue;
    const raw = part.slice("pair=".length);
    try {
      return decodeURIComponent(raw);
    } catch {
      return raw; // not percent-encoded after all
    }
  }
  return null;
}

/** The key in a URL fragment such as `#pair=phone.s3cret`. */
export function keyFromFragment(fragment: string): AccessKey | null {
  const v = pairValueOfFragment(fragment);
  return v === null ? null : parseKeyText(v);
}

/** The fragment with its `pair=` part removed ("" when nothing else is left). */
export function fragmentWithoutPair(fragment: string): string {
  const f = fragment.startsWith("#") ? fragment.slice(1) : fragment;
  const rest = f.split("&").filter((p) => p !== "" && !p.startsWith("pair="));
  return rest.length ? `#${rest.join("&")}` : "";
}

/**
 * What a user pastes into the pairing field: a whole pairing link, a bare
 * `#pair=...` fragment, or `<id>.<secret>`. Surrounding white space (a
 * copied line) is ignored.
 */
export function parsePairingInput(input: string): AccessKey | null {
  const text = input.trim();
  if (!text) return null;
  const hash = text.indexOf("#");
  if (hash >= 0 && pairValueOfFragment(text.slice(hash)) !== null) return keyFromFragment(text.slice(hash));
  if (text.startsWith("pair=")) return keyFromFragment(text);
  return parseKeyText(text);
}

/** A pairing link for `key` on the page at `pageUrl` (any fragment of it is dropped). */
export function pairingLink(pageUrl: string, key: AccessKey): string {
  const base = pageUrl.split("#")[0];
  return `${base}#pair=${key.id}.${encodeURIComponent(key.secret)}`;
}

/**
 * The key as kept in localStorage: the role is the one the device last
 * accepted, if any, and only ever one that verified messages established
 * (see RoleLadder).
 */
export interface StoredKey extends AccessKey {
  role: Role | null;
}

/**
 * The text stored for a key. A `view` role is marked `verified`: one
 * stored without the mark (by an older page, which let an unverified
 * refusal downgrade it) is not believed.
 */
export function storedKeyText(k: StoredKey): string {
  return JSON.stringify(k.role === "view" ? { ...k, verified: true } : k);
}

/** Reads a stored key; null for anything that is not one. */
export function parseStoredKey(raw: string | null): StoredKey | null {
  if (!raw) return null;
  try {
    const v = JSON.parse(raw) as Record<string, unknown>;
    if (typeof v !== "object" || v === null) return null;
    if (typeof v.id !== "string" || typeof v.secret !== "string" || !isValidKeyId(v.id) || !v.secret) return null;
    const role = v.role === "control" || (v.role === "view" && v.verified === true) ? v.role : null;
    return { id: v.id, secret: v.secret, role };
  } catch {
    return null;
  }
}
