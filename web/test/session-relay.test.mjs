// How a session reports a relay hand-over (session.ts, with a stand-in
// RTCPeerConnection): which `busy` errors with a `relay` end the session as
// `{kind: "relay"}`, and which stay ordinary (or unverified) refusals.
// `npm test`.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { installFakes } from "./fakes.mjs";

const b64u = (buf) => Buffer.from(buf).toString("base64").replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const hmac = (key, text) => createHmac("sha256", key).update(text, "utf8").digest();

let lib;
before(async () => {
  installFakes();
  lib = await import("../.test-build/lib.mjs");
});

const SECRET = "s3cret-key";
const JANUS = "http://127.0.0.1:8088/janus";
const PIN = "pin-0123456789";

/** A started session; `k` is its session key as the device computes it from the offer. */
async function started(signed) {
  const published = [];
  const ended = [];
  const sig = {
    publish: async (topic, payload) => void published.push(JSON.parse(payload)),
    subscribe: async () => {},
    unsubscribe: () => {},
  };
  const events = {
    state() {},
    stream() {},
    rpc() {},
    notification() {},
    ended: (why) => ended.push(why),
    unverified() {},
    notice() {},
  };
  const s = new lib.Session(
    {
      topics: new lib.Topics("campeer", "cam1"),
      deviceId: "cam1",
      iceServers: [],
      auth: signed ? { key: { id: "phone", secret: SECRET }, role: "view", nonce: () => "AAECAwQFBgcICQoLDA0ODw" } : null,
      wantVideo: false,
    },
    sig,
    events,
  );
  await s.start();
  const offer = published[0];
  assert.equal(offer.type, "offer");
  const k = signed ? hmac(SECRET, `campeer-session-v2\n${offer.auth.sig}`) : null;
  return { s, k, ended };
}

/** The device's relay object for this session. */
function relayFor(s, k, { pin = PIN, mountpoint = 77 } = {}) {
  const pad = hmac(k, `campeer-relay-v2\n${s.sid}`);
  const pinX = b64u(Buffer.from(pin).map((b, i) => b ^ pad[i]));
  return { janus: JANUS, mountpoint, pin_x: pinX, mac: b64u(hmac(k, `campeer-relay-v2\n${JANUS}\n${mountpoint}\n${pinX}`)) };
}

const busy = (k, relay, extra = {}) =>
  lib.parseOut(
    JSON.stringify({
      type: "error",
      code: "busy",
      message: "watch through the relay",
      relay,
      ...(k ? { mac: b64u(hmac(k, "campeer-msg-v2\nout\nerror\nbusy")) } : {}),
      ...extra,
    }),
  );

test("a verified busy with a valid relay ends the session as a relay hand-over", async () => {
  const { s, k, ended } = await started(true);
  await s.handle(busy(k, relayFor(s, k)));
  assert.deepEqual(ended, [{ kind: "relay", relay: { janus: JANUS, mountpoint: 77, pin: PIN }, message: "watch through the relay" }]);
});

test("a relay whose own mac verifies is followed without the outer mac", async () => {
  const { s, k, ended } = await started(true);
  await s.handle(busy(null, relayFor(s, k)));
  assert.equal(ended.length, 1);
  assert.equal(ended[0].kind, "relay");
  assert.equal(ended[0].relay.pin, PIN);
});

test("a wrong outer mac is an unverified refusal, relay or not", async () => {
  const { s, k, ended } = await started(true);
  await s.handle(busy(k, relayFor(s, k), { mac: relayFor(s, k).mac }));
  assert.deepEqual(ended, []);
  await new Promise((r) => setTimeout(r, 1600));
  assert.equal(ended.length, 1);
  assert.deepEqual(ended[0], { kind: "error", code: "busy", message: "watch through the relay", verified: false });
});

test("a verified busy whose relay does not check out is a busy refusal that says why", async () => {
  const { s, k, ended } = await started(true);
  await s.handle(busy(k, { ...relayFor(s, k), mountpoint: 78 }));
  assert.equal(ended.length, 1);
  assert.equal(ended[0].kind, "error");
  assert.equal(ended[0].code, "busy");
  assert.equal(ended[0].verified, true);
  assert.match(ended[0].message, /relay was refused: its mac does not verify/);
  // A relay forged without the key, with no outer mac: neither followed nor
  // trusted (it waits out the grace like any unverified refusal).
  const other = await started(true);
  const forged = relayFor(other.s, hmac("another", "key"));
  await other.s.handle(busy(null, forged));
  assert.deepEqual(other.ended, []);
  other.s.close(false);
});

test("only busy hands over, and an open device's relay has the PIN in clear", async () => {
  const a = await started(true);
  await a.s.handle(
    lib.parseOut(JSON.stringify({ type: "error", code: "unauthorized", message: "no", relay: relayFor(a.s, a.k), mac: b64u(hmac(a.k, "campeer-msg-v2\nout\nerror\nunauthorized")) })),
  );
  assert.equal(a.ended[0].kind, "error");
  assert.equal(a.ended[0].code, "unauthorized");

  const o = await started(false);
  await o.s.handle(busy(null, { janus: JANUS, mountpoint: 5, pin: "1234" }));
  assert.deepEqual(o.ended, [{ kind: "relay", relay: { janus: JANUS, mountpoint: 5, pin: "1234" }, message: "watch through the relay" }]);
});
