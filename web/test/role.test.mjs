// Only verified messages count for the page's role (auth.ts RoleLadder,
// pairing.ts storedKeyText, session.ts): an unverified `error` before the
// answer changes nothing while the answer can still come, and the role a
// forged refusal pushes the page to is never stored. `npm test`.
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
const SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n";

/** A started signed session offering `role`; `k` is its key as the device computes it. */
async function started(role) {
  const published = [];
  const ended = [];
  const states = [];
  const sig = {
    publish: async (topic, payload) => void published.push(JSON.parse(payload)),
    subscribe: async () => {},
    unsubscribe: () => {},
  };
  const events = {
    state: (st) => states.push(st),
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
      auth: { key: { id: "phone", secret: SECRET }, role, nonce: () => "AAECAwQFBgcICQoLDA0ODw" },
      wantVideo: false,
    },
    sig,
    events,
  );
  await s.start();
  const offer = published[0];
  assert.equal(offer.auth.role, role);
  const k = hmac(SECRET, `campeer-session-v2\n${offer.auth.sig}`);
  return { s, k, ended, states };
}

const refusal = (mac) =>
  lib.parseOut(JSON.stringify({ type: "error", code: "unauthorized", message: "role above the key's", ...(mac ? { mac } : {}) }));
const answer = (k) => lib.parseOut(JSON.stringify({ type: "answer", sdp: SDP, mac: b64u(hmac(k, `campeer-msg-v2\nout\nanswer\n${SDP}`)) }));

test("an unverified refusal racing the verified answer changes nothing", async () => {
  const { s, k, ended, states } = await started("control");
  const before = [...states];
  await s.handle(refusal(null));
  await s.handle(refusal("forged-mac"));
  assert.deepEqual(ended, [], "no end before the answer had its chance");
  assert.deepEqual(states, before, "no state change on an unverified error");
  await s.handle(answer(k));
  await new Promise((r) => setTimeout(r, 1700)); // past the grace
  assert.deepEqual(ended, [], "the verified answer won: the refusal is forgotten");
  s.close(false);
});

test("a refusal is reported verified only when its mac verifies", async () => {
  const a = await started("control");
  await a.s.handle(refusal(b64u(hmac(a.k, "campeer-msg-v2\nout\nerror\nunauthorized"))));
  assert.deepEqual(a.ended, [{ kind: "error", code: "unauthorized", message: "role above the key's", verified: true }]);
  const b = await started("control");
  await b.s.handle(refusal(null));
  await new Promise((r) => setTimeout(r, 1700));
  assert.deepEqual(b.ended, [{ kind: "error", code: "unauthorized", message: "role above the key's", verified: false }]);
});

/** The page's role logic over several page loads (main.ts: setKey, onUnauthorized, roleAccepted). */
function pageLoad(storage, refusals) {
  const stored = lib.parseStoredKey(storage.text);
  const ladder = new lib.RoleLadder(stored.role);
  for (const verified of refusals) {
    if (ladder.refused(verified) !== "retry") return { role: null, stored: lib.parseStoredKey(storage.text) };
  }
  const keep = ladder.accepted();
  if (keep !== null && keep !== stored.role) storage.text = lib.storedKeyText({ ...stored, role: keep });
  return { role: ladder.current, stored: lib.parseStoredKey(storage.text) };
}

test("a forged refusal leaves no lasting downgrade; a verified one is kept", () => {
  const storage = { text: lib.storedKeyText({ id: "phone", secret: SECRET, role: null }) };
  // First load: control accepted and kept.
  assert.deepEqual(pageLoad(storage, []), { role: "control", stored: { id: "phone", secret: SECRET, role: "control" } });
  // Second load: a forged refusal of control; view is used for this load only.
  assert.deepEqual(pageLoad(storage, [false]), { role: "view", stored: { id: "phone", secret: SECRET, role: "control" } });
  // Third load: control again.
  assert.equal(new lib.RoleLadder(lib.parseStoredKey(storage.text).role).current, "control");
  assert.deepEqual(pageLoad(storage, []).role, "control");
  // A fresh key refused unverified: view now, nothing stored.
  const fresh = { text: lib.storedKeyText({ id: "wall", secret: SECRET, role: null }) };
  assert.deepEqual(pageLoad(fresh, [false]).stored.role, null);
  // The device's own (verified) refusal: view is kept, marked verified.
  assert.deepEqual(pageLoad(fresh, [true]).stored.role, "view");
  assert.equal(JSON.parse(fresh.text).verified, true);
  assert.equal(new lib.RoleLadder(lib.parseStoredKey(fresh.text).role).current, "view");
});
