// Unit tests of ICE servers over signaling (docs/protocol.md#ice-servers-for-viewers-ice_request) and of
// the hosted page's link fragment: `npm test`.
//
// The section 8 vectors were computed by an independent implementation of
// the protocol text (Python's hmac, hashlib and json), not by this code;
// the daemon's own tests check against the same figures.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  signIce,
  iceKey,
  iceMac,
  iceRequest,
  iceStreamXor,
  fromB64u,
  parseIceAnswer,
  openIce,
  iceUsable,
  b64u,
  targetFromFragment,
  fragmentToKeep,
  remoteLink,
  remoteConfig,
  parseStoredTarget,
  storedTargetText,
  brokerReachableFrom,
  keyFromFragment,
} from "../.test-build/lib.mjs";

const SECRET = "ice-test-secret-0123456789";
const DEVICE = "cam1";
const SID = "iceSID01";
const NONCE = "AAAAAAAAAAAAAAAAAAAAAA";
const SIG = "o0i0UX0A2HSwxJFqsGZoQZ2O1Be8KSXS-lGWYyhyQ0w";
const PASSWORD = "nTBa68eEjSfB268BIMaGVomMaQY=";
const EXPIRES = 1_700_003_600;
const SEALED =
  "LgWS5t8MT3ZxGYC9rvGWL0hC0ZKNbSiezB6uYSD7oERAhsRghFRjFwIdxQqmGE409iwo9vgh_HA1suhSmK1py9BPE8rHGCertWHqV2-kPF3QNiSAs2rpXdZjGjvYRfmSVmnQZZTmJuE0_5kI0wF1wvvpfop9X5htXvxCBwg6fcMkBKbayt0Xg_tn4YnLARDyr4lIyOv31u_umEKDbA";
const MAC = "G49_C64uc5mGpGIgVeTlr9_B0SGnMRzD0Ynrsn2ZLlI";
const SERVERS = [
  { urls: ["turn:198.18.0.1:3478?transport=udp"], username: `${EXPIRES}:phone`, credential: PASSWORD },
  { urls: ["stun:198.18.0.1:3478"] },
];
const reply = (over = {}) => parseIceAnswer(JSON.stringify({ type: "ice", servers_x: SEALED, expires: EXPIRES, mac: MAC, ...over }));

test("the request is signed as the protocol text says", () => {
  assert.equal(signIce(SECRET, DEVICE, SID, NONCE), SIG);
  const { json, k } = iceRequest(DEVICE, SID, { key: { id: "phone", secret: SECRET }, nonce: NONCE });
  assert.deepEqual(JSON.parse(json), { type: "ice_request", auth: { key: "phone", nonce: NONCE, sig: SIG } });
  assert.deepEqual(k, iceKey(SECRET, SIG));
  // An open device: no auth, nothing to open a reply with.
  const open = iceRequest(DEVICE, SID, null);
  assert.deepEqual(JSON.parse(open.json), { type: "ice_request" });
  assert.equal(open.k, null);
});

test("the independent implementation's sealed reply opens to its servers", () => {
  const k = iceKey(SECRET, SIG);
  assert.equal(iceMac(k, SEALED, EXPIRES), MAC);
  const r = openIce(k, SID, reply());
  assert.deepEqual(r, { ok: true, servers: SERVERS, expires: EXPIRES });
});

test("a reply opens only with its key, sid, expiry and mac", () => {
  const k = iceKey(SECRET, SIG);
  const other = iceKey("another-secret-0123456789", SIG);
  assert.deepEqual(openIce(other, SID, reply()), { ok: false, why: "the reply's mac does not verify" });
  assert.equal(openIce(k, SID, reply({ mac: undefined })).ok, false);
  assert.equal(openIce(k, SID, reply({ mac: "G49_C64uc5mGpGIgVeTlr9_B0SGnMRzD0Ynrsn2ZLlJ" })).ok, false);
  assert.equal(openIce(k, SID, reply({ expires: EXPIRES + 1 })).ok, false, "a changed expiry");
  // Clear servers on a signed request are not taken.
  assert.equal(openIce(k, SID, reply({ servers_x: undefined, mac: undefined, servers: SERVERS })).ok, false);
  // Another sid's keystream gives garbage, refused rather than used.
  const r = openIce(k, "iceSID02", reply());
  assert.equal(r.ok, false);
  // A forged reply with a valid mac over bytes that are not servers.
  const bytes = new TextEncoder().encode('{"not":"a list"}');
  iceStreamXor(k, SID, bytes);
  const x = b64u(bytes);
  assert.deepEqual(openIce(k, SID, reply({ servers_x: x, mac: iceMac(k, x, EXPIRES) })), {
    ok: false,
    why: "the servers are not a list of RTCIceServer",
  });
});

test("an open device's servers come in clear", () => {
  const a = parseIceAnswer(JSON.stringify({ type: "ice", servers: SERVERS, expires: 0 }));
  assert.deepEqual(openIce(null, SID, a), { ok: true, servers: SERVERS, expires: 0 });
  assert.equal(openIce(null, SID, parseIceAnswer(JSON.stringify({ type: "ice", servers: "x", expires: 0 }))).ok, false);
});

test("answers are parsed strictly", () => {
  assert.deepEqual(parseIceAnswer('{"type":"error","code":"bad_request","message":"unknown type"}'), {
    type: "error",
    code: "bad_request",
    message: "unknown type",
  });
  assert.equal(parseIceAnswer("not json"), null);
  assert.equal(parseIceAnswer('{"type":"answer","sdp":"x"}'), null);
  assert.equal(parseIceAnswer('{"type":"ice","servers_x":"x","expires":-1}'), null);
  assert.equal(parseIceAnswer('{"type":"ice","servers_x":"x","expires":"1"}'), null);
  assert.equal(parseIceAnswer('{"type":"ice","servers_x":"x","expires":1.5}'), null);
  assert.equal(fromB64u("a"), null);
  assert.equal(fromB64u("ab+c"), null);
  assert.deepEqual(fromB64u(b64u(Uint8Array.of(1, 2, 3, 4, 250))), Uint8Array.of(1, 2, 3, 4, 250));
});

test("servers are kept until shortly before they expire, never past it", () => {
  const t = 1_700_000_000;
  assert.equal(iceUsable(t + 3600, t, t), true);
  assert.equal(iceUsable(t + 3600, t, t + 3569), true);
  assert.equal(iceUsable(t + 3600, t, t + 3570), false, "30 s before expiry: ask again");
  assert.equal(iceUsable(t + 3600, t, t + 4000), false);
  assert.equal(iceUsable(t + 10, t, t), false, "credentials about to expire are not used");
  // No expiry (static servers only): asked again after ten minutes.
  assert.equal(iceUsable(0, t, t + 599), true);
  assert.equal(iceUsable(0, t, t + 600), false);
  // A clock that went back: ask again.
  assert.equal(iceUsable(t + 3600, t, t - 5), false);
});

const BROKER = "wss://broker.example.org:8884/mqtt";

test("a hosted page's link names the device and the broker", () => {
  const f = `#pair=phone.s3cr.et&device=cam1&broker=${encodeURIComponent(BROKER)}`;
  assert.deepEqual(targetFromFragment(f), { broker: BROKER, device: "cam1", prefix: "campeer" });
  assert.deepEqual(keyFromFragment(f), { id: "phone", secret: "s3cr.et" });
  assert.deepEqual(targetFromFragment(`device=cam1&broker=${encodeURIComponent(BROKER)}&prefix=home%2Fcams`), {
    broker: BROKER,
    device: "cam1",
    prefix: "home/cams",
  });
  // Not percent-encoded: still a URL.
  assert.deepEqual(targetFromFragment("#device=cam1&broker=ws://10.0.0.2:9001/"), { broker: "ws://10.0.0.2:9001/", device: "cam1", prefix: "campeer" });
  assert.equal(targetFromFragment("#pair=phone.x"), null, "a device-served page's link");
  assert.equal(targetFromFragment(""), null);
  for (const bad of [
    "#device=cam1",
    `#broker=${encodeURIComponent(BROKER)}`,
    `#device=Cam1&broker=${encodeURIComponent(BROKER)}`,
    "#device=cam1&broker=https%3A%2F%2Fbroker.example.org%2F",
    "#device=cam1&broker=javascript%3Aalert(1)",
    "#device=cam1&broker=not%20a%20url",
    `#device=cam1&broker=${encodeURIComponent(BROKER)}&prefix=a%2F%2B`,
    `#device=cam1&broker=${encodeURIComponent(BROKER)}&prefix=`,
  ]) {
    assert.equal(targetFromFragment(bad), "malformed", bad);
  }
});

test("the key leaves the address bar, the target stays unless it holds a password", () => {
  const b = encodeURIComponent(BROKER);
  assert.equal(fragmentToKeep(`#pair=phone.x&device=cam1&broker=${b}`), `#device=cam1&broker=${b}`);
  assert.equal(fragmentToKeep("#pair=phone.x"), "");
  const withLogin = encodeURIComponent("wss://viewer:hunter2@broker.example.org/mqtt");
  assert.equal(fragmentToKeep(`#pair=phone.x&device=cam1&broker=${withLogin}`), "#device=cam1");
});

test("links, stored targets and the configuration they stand for", () => {
  const t = { broker: BROKER, device: "cam1", prefix: "campeer" };
  const link = remoteLink("https://cams.example.org/#old", "phone.abc", t);
  assert.equal(link, `https://cams.example.org/#pair=phone.abc&device=cam1&broker=${encodeURIComponent(BROKER)}`);
  assert.deepEqual(targetFromFragment(link.slice(link.indexOf("#"))), t);
  assert.deepEqual(parseStoredTarget(storedTargetText(t)), t);
  assert.equal(parseStoredTarget('{"device":"cam1","broker":"http://x/","prefix":"campeer"}'), null);
  assert.equal(parseStoredTarget("nope"), null);
  const signed = remoteConfig(t, true);
  assert.equal(signed.auth, "signed");
  assert.equal(signed.own_broker, true);
  assert.equal(signed.ws_url, BROKER);
  assert.equal(signed.claimable, false);
  assert.equal(remoteConfig(t, false).auth, "open");
  assert.equal(remoteConfig({ ...t, broker: "wss://u:p@broker.example.org/" }, true).own_broker, false, "the URL's own login");
  assert.equal(brokerReachableFrom("https:", "ws://x/"), false);
  assert.equal(brokerReachableFrom("https:", BROKER), true);
  assert.equal(brokerReachableFrom("http:", "ws://x/"), true);
});
