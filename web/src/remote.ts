// A page that lives off the device (docs/viewer.md, "A page hosted
// anywhere"): which camera to show and through which broker comes from
// the link's fragment, not from the device's /config.json:
//
//   <page URL>#pair=<id>.<secret>&device=<device id>&broker=<URL-encoded ws(s):// URL>[&prefix=<topic root>]
//
// The page keeps the target (and the key, as always) for later visits.
// Pure functions, no DOM.

import { isValidKeyId } from "./pairing";
import type { PageConfig } from "./protocol";

/** The camera a hosted page shows, and how it reaches it. */
export interface RemoteTarget {
  /** The broker's MQTT-over-WebSocket URL (`ws:` or `wss:`). */
  broker: string;
  /** The device id. */
  device: string;
  /** The topic root (`mqtt.prefix`), `campeer` unless the link says otherwise. */
  prefix: string;
}

export const DEFAULT_PREFIX = "campeer";

/** The fragment's `&`-separated `name=value` parts, values percent-decoded (first one wins). */
function fragmentParams(fragment: string): Map<string, string> {
  const f = fragment.startsWith("#") ? fragment.slice(1) : fragment;
  const out = new Map<string, string>();
  for (const part of f.split("&")) {
    const eq = part.indexOf("=");
    if (eq <= 0) continue;
    const name = part.slice(0, eq);
    if (out.has(name)) continue;
    const raw = part.slice(eq + 1);
    try {
      out.set(name, decodeURIComponent(raw));
    } catch {
      out.set(name, raw);
    }
  }
  return out;
}

/** A `ws:`/`wss:` URL without a fragment; the normalized text, or null. */
export function brokerOk(url: string): string | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  if ((u.protocol !== "ws:" && u.protocol !== "wss:") || !u.hostname || u.hash) return null;
  return u.toString();
}

/** A topic root: not empty, no MQTT wildcards, no empty level at either end. */
export function prefixOk(prefix: string): boolean {
  return prefix.length > 0 && prefix.length <= 128 && !/[+#\u0000]/.test(prefix) && !prefix.startsWith("/") && !prefix.endsWith("/");
}

/**
 * The target in a fragment: null when it names none (no `device=` and no
 * `broker=`), `malformed` when it names one badly (one without the other,
 * a bad device id, a broker that is not ws:/wss:, a bad prefix).
 */
export function targetFromFragment(fragment: string): RemoteTarget | "malformed" | null {
  const p = fragmentParams(fragment);
  const device = p.get("device");
  const broker = p.get("broker");
  if (device === undefined && broker === undefined) return null;
  if (device === undefined || broker === undefined || !isValidKeyId(device)) return "malformed";
  const url = brokerOk(broker);
  const prefix = p.get("prefix") ?? DEFAULT_PREFIX;
  if (!url || !prefixOk(prefix)) return "malformed";
  return { broker: url, device, prefix };
}

/** Whether a broker URL carries a password (which must not stay in the address bar). */
function hasPassword(url: string): boolean {
  try {
    return new URL(url).password !== "";
  } catch {
    return false;
  }
}

/**
 * What stays in the address bar: the fragment without its key (`pair=`),
 * and without a `broker=` whose URL carries a password. `device=` and a
 * plain `broker=` stay, so the address can be bookmarked for this camera.
 */
export function fragmentToKeep(fragment: string): string {
  const f = fragment.startsWith("#") ? fragment.slice(1) : fragment;
  const keep = f.split("&").filter((part) => {
    if (part === "" || part.startsWith("pair=")) return false;
    if (!part.startsWith("broker=")) return true;
    const raw = part.slice("broker=".length);
    let url = raw;
    try {
      url = decodeURIComponent(raw);
    } catch {
      /* left as it is */
    }
    return !hasPassword(url);
  });
  return keep.length ? `#${keep.join("&")}` : "";
}

/** A hosted-page link: `<page URL>#pair=<id>.<secret>&device=...&broker=...[&prefix=...]`. */
export function remoteLink(pageUrl: string, pair: string | null, t: RemoteTarget): string {
  const parts = [];
  if (pair !== null) parts.push(`pair=${pair}`);
  parts.push(`device=${t.device}`, `broker=${encodeURIComponent(t.broker)}`);
  if (t.prefix !== DEFAULT_PREFIX) parts.push(`prefix=${encodeURIComponent(t.prefix)}`);
  return `${pageUrl.split("#")[0]}#${parts.join("&")}`;
}

/** The target as kept in localStorage. */
export function storedTargetText(t: RemoteTarget): string {
  return JSON.stringify(t);
}

/** Reads a stored target; null for anything that is not one. */
export function parseStoredTarget(raw: string | null): RemoteTarget | null {
  if (!raw) return null;
  try {
    const v = JSON.parse(raw) as Record<string, unknown>;
    if (typeof v !== "object" || v === null) return null;
    if (typeof v.device !== "string" || typeof v.broker !== "string" || typeof v.prefix !== "string") return null;
    const broker = brokerOk(v.broker);
    if (!broker || !isValidKeyId(v.device) || !prefixOk(v.prefix)) return null;
    return { broker, device: v.device, prefix: v.prefix };
  } catch {
    return null;
  }
}

/**
 * The page configuration for a target, in place of the device's
 * /config.json: signed when the page holds a key (a status saying `open`
 * can then never talk it out of signing), and a key login on the broker
 * unless its URL carries a login of its own.
 */
export function remoteConfig(t: RemoteTarget, hasKey: boolean): PageConfig {
  let urlLogin = false;
  try {
    urlLogin = new URL(t.broker).username !== "";
  } catch {
    /* checked when the target was read */
  }
  return {
    device_id: t.device,
    prefix: t.prefix,
    ws_url: t.broker,
    ws_port: null,
    ws_path: "/mqtt",
    auth: hasKey ? "signed" : "open",
    ice_servers: [],
    own_broker: !urlLogin,
    claimable: false,
  };
}

/** Whether a page loaded over `pageProtocol` may open this broker URL (an https: page cannot open ws:). */
export function brokerReachableFrom(pageProtocol: string, broker: string): boolean {
  return !(pageProtocol === "https:" && broker.startsWith("ws:"));
}
