// Unit tests of protocol version 2 authorization (docs/protocol.md#authorization-protocol-version-2) and
// of pairing links: `npm test`.
//
// Every expected value below was computed with openssl, not with the code
// under test. The shell used:
//
//   S='test-secret-0123456789'
//   b64u() { base64 | tr '+/' '-_' | tr -d '='; }
//   sig=$(printf 'campeer-offer-v2\ncam1\nabcdEFGH1234\ncontrol\nAAECAwQFBgcICQoLDA0ODw\nv=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n' \
//         | openssl dgst -sha256 -hmac "$S" -binary | b64u)
//   K=$(printf "campeer-session-v2\n$sig" | openssl dgst -sha256 -mac HMAC -macopt key:$S -hex | awk '{print $NF}')
//   m() { printf "$1" | openssl dgst -sha256 -mac HMAC -macopt hexkey:$K -binary | b64u; }
//
// and the command for each vector is next to it.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  b64u,
  signOffer,
  sessionKey,
  mqttPassword,
  candidateBody,
  macBody,
  messageMac,
  verifies,
  judge,
  RoleLadder,
  sameText,
  offerMessage,
  candidateMessage,
  byeMessage,
  parseOut,
  effectiveAuth,
  parseIceServers,
  parseKeyText,
  keyFromFragment,
  pairValueOfFragment,
  fragmentWithoutPair,
  parsePairingInput,
  pairingLink,
  parseStoredKey,
  isValidKeyId,
} from "../.test-build/lib.mjs";

const SECRET = "test-secret-0123456789";
const DEVICE = "cam1";
const SID = "abcdEFGH1234";
const NONCE = "AAECAwQFBgcICQoLDA0ODw";
const SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n";
// $sig above.
const SIG_CONTROL = "wFDiqF5kIZ6Pr3XRB96_X7TR5v5F4loqAD16a-seIaw";
// The same with `view` in place of `control`.
const SIG_VIEW = "aS-dCPaAHxF3Jo_cKEA0XD3zbyk7zsiw-6Uxku303KI";
// $K above (hex of the 32 raw bytes).
const K_HEX = "79cacb02ad1bea08a9f5d12b27d66cdedcfc5d00e5cde51eabbabd4f923b65ce";
const K = Uint8Array.from(K_HEX.match(/../g), (h) => parseInt(h, 16));

const C_IN = { candidate: "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host", sdpMid: "0", sdpMLineIndex: 0 };
const C_OUT = { candidate: "candidate:2 1 udp 1 192.168.1.2 6000 typ host", sdpMLineIndex: 1 };
const C_BARE = { candidate: "candidate:3 1 udp 1 10.0.0.1 7000 typ host", sdpMid: null, sdpMLineIndex: null };
const MAC = {
  // m 'campeer-msg-v2\nout\nanswer\nv=0\r\ns=answer\r\n'
  answerOut: "eMEqg46o0qtGNLKN1cF7qXQ-rqawTyv2pMkO4XX0zTg",
  // m 'campeer-msg-v2\nin\ncandidate\ncandidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\n0\n0'
  candIn: "iMjDECaZJ3RLcD7X17y7xC_6lq749rDvVpxsDA5L_80",
  // m 'campeer-msg-v2\nout\ncandidate\ncandidate:2 1 udp 1 192.168.1.2 6000 typ host\n\n1'
  candOut: "vEit9Dbng45DbhfygtDsEahLw0NmCePVSAKZFLUD3lA",
  // m 'campeer-msg-v2\nout\ncandidate\ncandidate:3 1 udp 1 10.0.0.1 7000 typ host\n\n'
  candBareOut: "8p19lFbHr1zUvqtvlQDhMqZz9u1yOl01ILhOUx_3hVA",
  // m 'campeer-msg-v2\nin\ncandidate\nend'
  endIn: "aJ2uPlZrAeG-8KgRynxAlX6UFCsXAPMloj4yN2SOIAc",
  // m 'campeer-msg-v2\nout\ncandidate\nend'
  endOut: "5kzGPskeUH7ZHKBejX8NynF7DaqQFanBsAYL5Uj-miA",
  // m 'campeer-msg-v2\nin\nbye\n'
  byeIn: "T58sSpeY9-U3LbAl8ORh_vASXqHd5Ngu3oyfABG-HUg",
  // m 'campeer-msg-v2\nout\nbye\ntimeout'
  byeOut: "Zo5TPE_JbS2fPdNaMGksMeN7bHCokFFXft7jcaDO4bY",
  // m 'campeer-msg-v2\nout\nerror\nunauthorized'
  errorOut: "B6DpJqE1cXhO44J0bLpKxpKwsDmLsD4JfKU7DjV2InY",
};
// printf 'campeer-mqtt-v2\ncam1' | openssl dgst -sha256 -hmac "$S" -binary | b64u
const MQTT_PASSWORD = "nTVzd4YCok8dq5X1Z1HNSUPLa-CQdfGyGo86PQDn6n8";

const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, "0")).join("");

test("offer signatures match openssl (v2: over the nonce)", () => {
  assert.equal(signOffer(SECRET, DEVICE, SID, "control", NONCE, SDP), SIG_CONTROL);
  assert.equal(signOffer(SECRET, DEVICE, SID, "view", NONCE, SDP), SIG_VIEW);
  // Every input is covered.
  assert.notEqual(signOffer(SECRET, DEVICE, SID, "control", "AAECAwQFBgcICQoLDA0ODx", SDP), SIG_CONTROL);
  assert.notEqual(signOffer(SECRET, "cam2", SID, "control", NONCE, SDP), SIG_CONTROL);
  assert.notEqual(signOffer(SECRET, DEVICE, "abcdEFGH1235", "control", NONCE, SDP), SIG_CONTROL);
  assert.notEqual(signOffer(SECRET, DEVICE, SID, "control", NONCE, SDP + " "), SIG_CONTROL);
  assert.notEqual(signOffer(SECRET + "x", DEVICE, SID, "control", NONCE, SDP), SIG_CONTROL);
});

test("the offer message carries key, role, nonce and sig", () => {
  const { json, sig } = offerMessage(SDP, DEVICE, SID, { key: { id: "phone", secret: SECRET }, role: "control", nonce: NONCE });
  assert.equal(sig, SIG_CONTROL);
  assert.deepEqual(JSON.parse(json), { type: "offer", sdp: SDP, auth: { key: "phone", role: "control", nonce: NONCE, sig: SIG_CONTROL } });
  const open = offerMessage(SDP, DEVICE, SID, null);
  assert.equal(open.sig, null);
  assert.deepEqual(JSON.parse(open.json), { type: "offer", sdp: SDP });
});

test("the session key and the broker password match openssl", () => {
  assert.equal(hex(sessionKey(SECRET, SIG_CONTROL)), K_HEX);
  assert.equal(sessionKey(SECRET, SIG_CONTROL).length, 32);
  assert.notEqual(hex(sessionKey(SECRET, SIG_VIEW)), K_HEX);
  assert.equal(mqttPassword(SECRET, DEVICE), MQTT_PASSWORD);
  assert.notEqual(mqttPassword(SECRET, "cam2"), MQTT_PASSWORD);
});

test("mac bodies follow the table of section 5", () => {
  assert.equal(macBody({ type: "answer", sdp: "v=0\r\n" }), "v=0\r\n");
  assert.equal(candidateBody(C_IN), "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\n0\n0");
  // An absent sdpMid is the empty text; an index of 0 is "0", not empty.
  assert.equal(candidateBody(C_OUT), "candidate:2 1 udp 1 192.168.1.2 6000 typ host\n\n1");
  assert.equal(candidateBody({ candidate: "c", sdpMid: "audio", sdpMLineIndex: 0 }), "c\naudio\n0");
  assert.equal(candidateBody(C_BARE), "candidate:3 1 udp 1 10.0.0.1 7000 typ host\n\n");
  assert.equal(candidateBody({ candidate: "c" }), "c\n\n");
  // usernameFragment is not covered.
  assert.equal(candidateBody({ ...C_IN, usernameFragment: "abcd" }), candidateBody(C_IN));
  assert.equal(candidateBody(null), "end");
  assert.equal(macBody({ type: "candidate", candidate: null }), "end");
  assert.equal(macBody({ type: "bye", reason: "timeout" }), "timeout");
  assert.equal(macBody({ type: "bye", reason: null }), "");
  assert.equal(macBody({ type: "bye" }), "");
  assert.equal(macBody({ type: "error", code: "busy", message: "ignored" }), "busy");
});

test("message macs match openssl in both directions", () => {
  assert.equal(messageMac(K, "out", { type: "answer", sdp: "v=0\r\ns=answer\r\n" }), MAC.answerOut);
  assert.equal(messageMac(K, "in", { type: "candidate", candidate: C_IN }), MAC.candIn);
  assert.equal(messageMac(K, "out", { type: "candidate", candidate: C_OUT }), MAC.candOut);
  assert.equal(messageMac(K, "out", { type: "candidate", candidate: C_BARE }), MAC.candBareOut);
  assert.equal(messageMac(K, "in", { type: "candidate", candidate: null }), MAC.endIn);
  assert.equal(messageMac(K, "out", { type: "candidate", candidate: null }), MAC.endOut);
  assert.equal(messageMac(K, "in", { type: "bye" }), MAC.byeIn);
  assert.equal(messageMac(K, "out", { type: "bye", reason: "timeout" }), MAC.byeOut);
  assert.equal(messageMac(K, "out", { type: "error", code: "unauthorized" }), MAC.errorOut);
});

test("the page's own candidates and bye carry the mac (dir in)", () => {
  assert.deepEqual(JSON.parse(candidateMessage(C_IN, K)), { type: "candidate", candidate: C_IN, mac: MAC.candIn });
  assert.deepEqual(JSON.parse(candidateMessage(null, K)), { type: "candidate", candidate: null, mac: MAC.endIn });
  assert.deepEqual(JSON.parse(byeMessage(K)), { type: "bye", mac: MAC.byeIn });
  // Open device: no mac at all.
  assert.deepEqual(JSON.parse(candidateMessage(C_IN, null)), { type: "candidate", candidate: C_IN });
  assert.deepEqual(JSON.parse(byeMessage(null)), { type: "bye" });
});

test("device messages verify only with the right key, direction and content", () => {
  const answer = parseOut(JSON.stringify({ type: "answer", sdp: "v=0\r\ns=answer\r\n", mac: MAC.answerOut }));
  assert.ok(verifies(K, answer, answer.mac));
  const cand = parseOut(JSON.stringify({ type: "candidate", candidate: C_OUT, mac: MAC.candOut }));
  assert.ok(verifies(K, cand, cand.mac));
  // A usernameFragment added on the way does not matter; anything covered does.
  const withUfrag = parseOut(JSON.stringify({ type: "candidate", candidate: { ...C_OUT, usernameFragment: "x" }, mac: MAC.candOut }));
  assert.ok(verifies(K, withUfrag, withUfrag.mac));
  const moved = parseOut(JSON.stringify({ type: "candidate", candidate: { ...C_OUT, sdpMLineIndex: 0 }, mac: MAC.candOut }));
  assert.ok(!verifies(K, moved, moved.mac));
  const bye = parseOut(JSON.stringify({ type: "bye", reason: "timeout", mac: MAC.byeOut }));
  assert.ok(verifies(K, bye, bye.mac));
  const otherReason = parseOut(JSON.stringify({ type: "bye", reason: "failed", mac: MAC.byeOut }));
  assert.ok(!verifies(K, otherReason, otherReason.mac));
  // The page's own message echoed back (dir in) does not pass as the device's.
  const echoed = parseOut(JSON.stringify({ type: "candidate", candidate: null, mac: MAC.endIn }));
  assert.ok(!verifies(K, echoed, echoed.mac));
  assert.ok(!verifies(sessionKey(SECRET, SIG_VIEW), answer, answer.mac));
  assert.ok(!verifies(K, answer, null));
  assert.ok(!verifies(K, answer, ""));
  assert.ok(sameText("abc", "abc") && !sameText("abc", "abd") && !sameText("abc", "ab"));
});

test("unverified messages never end a session with a verified answer", () => {
  const signed = (answered) => ({ signed: true, k: K, answered });
  const good = {
    answer: { type: "answer", sdp: "v=0\r\ns=answer\r\n", mac: MAC.answerOut },
    candidate: { type: "candidate", candidate: C_OUT, mac: MAC.candOut },
    bye: { type: "bye", reason: "timeout", mac: MAC.byeOut },
    error: { type: "error", code: "unauthorized", message: "", mac: MAC.errorOut },
  };
  for (const answered of [false, true]) {
    for (const m of Object.values(good)) {
      assert.equal(judge(m, signed(answered)), "apply", `${m.type} answered=${answered}`);
      // Missing or wrong macs.
      for (const mac of [null, "", MAC.endIn, good.answer.mac.slice(1)]) {
        const forged = { ...m, mac };
        const want = m.type === "error" && !answered ? "unverified-error" : "ignore";
        assert.equal(judge(forged, signed(answered)), want, `${m.type} mac=${mac} answered=${answered}`);
      }
    }
  }
  // The rule itself: once answered, no unverified bye or error gets through.
  assert.equal(judge({ type: "bye", reason: "shutdown", mac: null }, signed(true)), "ignore");
  assert.equal(judge({ type: "error", code: "internal", message: "", mac: null }, signed(true)), "ignore");
  // Before the signed offer is out there is no key: nothing verifies (not even a mac over an empty key).
  assert.equal(judge(good.answer, { signed: true, k: null, answered: false }), "ignore");
  assert.equal(judge({ type: "error", code: "busy", message: "", mac: null }, { signed: true, k: null, answered: false }), "unverified-error");
  // An open device has no macs: everything applies.
  assert.equal(judge({ type: "bye", reason: "timeout", mac: null }, { signed: false, k: null, answered: true }), "apply");
});

test("the role ladder: control first, view once, then the key is refused", () => {
  const fresh = new RoleLadder(null);
  assert.equal(fresh.current, "control");
  assert.equal(fresh.accepted(), "control");

  // The device's refusal of control verified: view is kept for the key.
  const viewOnly = new RoleLadder(null);
  assert.equal(viewOnly.refused(true), "retry");
  assert.equal(viewOnly.current, "view");
  assert.equal(viewOnly.accepted(), "view");

  for (const verified of [true, false]) {
    const revoked = new RoleLadder(null);
    assert.equal(revoked.refused(verified), "retry");
    assert.equal(revoked.refused(verified), "key-refused");
    assert.equal(revoked.refused(verified), "key-refused"); // never a loop back to control
  }

  // A key known to be view-only offers view, and a refusal means the key is refused.
  const stored = new RoleLadder("view");
  assert.equal(stored.current, "view");
  assert.equal(stored.accepted(), "view");
  assert.equal(stored.refused(false), "key-refused");
  const storedControl = new RoleLadder("control");
  assert.equal(storedControl.current, "control");
  assert.equal(storedControl.refused(true), "retry");
});

test("config.json and the status: the stricter auth wins", () => {
  assert.equal(effectiveAuth("open", undefined), "open");
  assert.equal(effectiveAuth("open", "open"), "open");
  assert.equal(effectiveAuth("open", "signed"), "signed");
  assert.equal(effectiveAuth("signed", "open"), "signed");
  assert.equal(effectiveAuth("signed", undefined), "signed");
  assert.equal(effectiveAuth(undefined, undefined), "signed");
  assert.equal(effectiveAuth("something-new", "open"), "signed");
});

test("ice.json replies are checked", () => {
  assert.deepEqual(parseIceServers({ ice_servers: [] }), []);
  assert.deepEqual(parseIceServers({ ice_servers: [{ urls: "stun:stun.lan:3478" }] }), [{ urls: ["stun:stun.lan:3478"] }]);
  assert.deepEqual(parseIceServers({ ice_servers: [{ urls: ["turn:t.lan:3478?transport=udp"], username: "u", credential: "c", x: 1 }] }), [
    { urls: ["turn:t.lan:3478?transport=udp"], username: "u", credential: "c" },
  ]);
  for (const bad of [null, [], {}, { ice_servers: "x" }, { ice_servers: [{}] }, { ice_servers: [{ urls: [] }] }, { ice_servers: [{ urls: [1] }] }, { ice_servers: [{ urls: "stun:x", username: 1 }] }]) {
    assert.equal(parseIceServers(bad), null, JSON.stringify(bad));
  }
});

test("b64u has no padding and the URL-safe alphabet", () => {
  assert.equal(b64u(new Uint8Array([0xfb, 0xff])), "-_8");
  assert.equal(b64u(new Uint8Array([])), "");
  assert.equal(b64u(new Uint8Array([1, 2, 3, 4])), "AQIDBA");
});

test("pairing links: id before the first dot, secret the rest", () => {
  assert.deepEqual(parseKeyText("phone.s3cret"), { id: "phone", secret: "s3cret" });
  assert.deepEqual(parseKeyText("phone.a.b.c"), { id: "phone", secret: "a.b.c" });
  assert.deepEqual(parseKeyText("0_x-y.Zm9v-_"), { id: "0_x-y", secret: "Zm9v-_" });
  for (const bad of ["", "phone", "phone.", ".secret", "Phone.s", "-phone.s", "_x.s", "a/b.s", `${"a".repeat(64)}.s`, `x.${"s".repeat(1025)}`]) {
    assert.equal(parseKeyText(bad), null, bad);
  }
  assert.ok(isValidKeyId("a".repeat(63)));
  assert.ok(!isValidKeyId("a".repeat(64)));

  assert.deepEqual(keyFromFragment("#pair=phone.s3cret"), { id: "phone", secret: "s3cret" });
  assert.deepEqual(keyFromFragment("pair=phone.s3cret"), { id: "phone", secret: "s3cret" });
  assert.deepEqual(keyFromFragment("#x=1&pair=phone.s%2F3%20c"), { id: "phone", secret: "s/3 c" });
  assert.deepEqual(keyFromFragment("#pair=phone.100%"), { id: "phone", secret: "100%" }); // not percent-encoded
  assert.equal(keyFromFragment("#pair=bad"), null);
  assert.equal(pairValueOfFragment("#pair=bad"), "bad");
  assert.equal(pairValueOfFragment("#other"), null);
  assert.equal(pairValueOfFragment(""), null);
  assert.equal(keyFromFragment(""), null);

  assert.equal(fragmentWithoutPair("#pair=phone.s3cret"), "");
  assert.equal(fragmentWithoutPair("#x=1&pair=phone.s3cret&y=2"), "#x=1&y=2");
  assert.equal(fragmentWithoutPair(""), "");
});

test("what users paste into the pairing field", () => {
  const k = { id: "phone", secret: "s3.cret" };
  assert.deepEqual(parsePairingInput("http://cam1.lan:8080/#pair=phone.s3.cret"), k);
  assert.deepEqual(parsePairingInput("  https://cam1.lan/view/?a=1#pair=phone.s3.cret\n"), k);
  assert.deepEqual(parsePairingInput("#pair=phone.s3.cret"), k);
  assert.deepEqual(parsePairingInput("pair=phone.s3.cret"), k);
  assert.deepEqual(parsePairingInput("phone.s3.cret"), k);
  // A secret with a '#' typed as id.secret.
  assert.deepEqual(parsePairingInput("phone.a#b"), { id: "phone", secret: "a#b" });
  for (const bad of ["", "   ", "http://cam1.lan:8080/", "http://cam1.lan:8080/#pair=", "hello"]) {
    assert.equal(parsePairingInput(bad), null, bad);
  }
  // A link made by the page parses back to the same key.
  for (const secret of ["Zm9vYmFy-_", "with space&amp#hash%"]) {
    const link = pairingLink("http://cam1.lan:8080/#old", { id: "phone", secret });
    assert.ok(link.startsWith("http://cam1.lan:8080/#pair=phone."), link);
    assert.deepEqual(parsePairingInput(link), { id: "phone", secret });
  }
  assert.equal(pairingLink("http://cam1.lan:8080/", { id: "phone", secret: "Zm9v" }), "http://cam1.lan:8080/#pair=phone.Zm9v");
});

test("stored keys are read back strictly", () => {
  assert.deepEqual(parseStoredKey('{"id":"phone","secret":"s","role":"view","verified":true}'), { id: "phone", secret: "s", role: "view" });
  // A view stored without the mark (an older page's, possibly a forged downgrade) is not believed.
  assert.deepEqual(parseStoredKey('{"id":"phone","secret":"s","role":"view"}'), { id: "phone", secret: "s", role: null });
  assert.deepEqual(parseStoredKey('{"id":"phone","secret":"s","role":"control"}'), { id: "phone", secret: "s", role: "control" });
  assert.deepEqual(parseStoredKey('{"id":"phone","secret":"s","role":null}'), { id: "phone", secret: "s", role: null });
  assert.deepEqual(parseStoredKey('{"id":"phone","secret":"s"}'), { id: "phone", secret: "s", role: null });
  assert.deepEqual(parseStoredKey('{"id":"phone","secret":"s","role":"admin"}'), { id: "phone", secret: "s", role: null });
  for (const bad of [null, "", "x", "null", "[]", '{"id":"Phone","secret":"s"}', '{"id":"phone","secret":""}', '{"id":"phone"}']) {
    assert.equal(parseStoredKey(bad), null, String(bad));
  }
});
