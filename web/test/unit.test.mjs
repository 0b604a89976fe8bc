// Unit tests of the page's DOM-free modules: `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  offerMessage,
  newSid,
  isValidSid,
  parseOut,
  parsePresence,
  brokerUrl,
  Topics,
  readStamp,
  diffMod32,
  ClockMap,
  median,
} from "../.test-build/lib.mjs";

test("session ids are valid and distinct", () => {
  const seen = new Set();
  for (let i = 0; i < 1000; i++) {
    const s = newSid();
    assert.ok(isValidSid(s), s);
    seen.add(s);
  }
  assert.equal(seen.size, 1000);
  assert.ok(!isValidSid("short"));
  assert.ok(!isValidSid("has/slash0"));
});

test("topics follow docs/protocol.md#topics", () => {
  const t = new Topics("home/cams", "cam1");
  assert.equal(t.status, "home/cams/cam1/status");
  assert.equal(t.in("abcdEFGH1234"), "home/cams/cam1/session/abcdEFGH1234/in");
  assert.equal(t.out("abcdEFGH1234"), "home/cams/cam1/session/abcdEFGH1234/out");
});

test("out messages are parsed strictly, with their mac", () => {
  assert.deepEqual(parseOut('{"type":"answer","sdp":"v=0"}'), { type: "answer", sdp: "v=0", mac: null });
  assert.deepEqual(parseOut('{"type":"answer","sdp":"v=0","mac":"abc"}'), { type: "answer", sdp: "v=0", mac: "abc" });
  assert.deepEqual(parseOut('{"type":"candidate","candidate":null}'), { type: "candidate", candidate: null, mac: null });
  const c = { candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host", sdpMid: "0", sdpMLineIndex: 0 };
  assert.deepEqual(parseOut(JSON.stringify({ type: "candidate", candidate: c })), { type: "candidate", candidate: c, mac: null });
  assert.deepEqual(parseOut('{"type":"bye","reason":"timeout"}'), { type: "bye", reason: "timeout", mac: null });
  assert.deepEqual(parseOut('{"type":"bye"}'), { type: "bye", reason: null, mac: null });
  assert.deepEqual(parseOut('{"type":"error","code":"unauthorized","message":"no"}'), { type: "error", code: "unauthorized", message: "no", mac: null });
  assert.deepEqual(parseOut(new TextEncoder().encode('{"type":"answer","sdp":"x","extra":1}')), { type: "answer", sdp: "x", mac: null });
  for (const bad of [
    "",
    "{",
    "null",
    "[]",
    "42",
    '{"type":"answer"}',
    '{"type":"answer","sdp":1}',
    '{"type":"answer","sdp":"x","mac":5}',
    '{"type":"candidate"}',
    '{"type":"candidate","candidate":{"sdpMid":"0"}}',
    '{"type":"candidate","candidate":{"candidate":"c","sdpMLineIndex":"0"}}',
    '{"type":"candidate","candidate":{"candidate":"c","sdpMLineIndex":1.5}}',
    '{"type":"candidate","candidate":{"candidate":"c","sdpMid":0}}',
    '{"type":"bye","reason":7}',
    '{"type":"error","message":"no code"}',
    '{"type":"x"}',
  ]) {
    assert.equal(parseOut(bad), null, bad);
  }
  assert.equal(parsePresence('{"state":"online","device":"cam1"}').state, "online");
  assert.equal(parsePresence('{"state":"online","device":"cam1","protocol":2,"nonce":"AAECAwQFBgcICQoLDA0ODw"}').nonce, "AAECAwQFBgcICQoLDA0ODw");
  assert.equal(parsePresence('{"state":"online","device":"cam1","nonce":5}').nonce, undefined);
  assert.equal(parsePresence('{"state":"online","device":"cam1","nonce":"a b"}').nonce, undefined);
  assert.equal(parsePresence('{"state":"maybe"}'), null);
  assert.equal(parsePresence("garbage"), null);
});

test("the broker URL comes from the config or the page's host", () => {
  const base = { device_id: "cam1", prefix: "campeer", ws_path: "/mqtt", auth: "open" };
  const loc = { protocol: "http:", hostname: "pi.local", port: "8080" };
  assert.equal(brokerUrl({ ...base, ws_url: "ws://b:9001/mqtt", ws_port: null }, loc), "ws://b:9001/mqtt");
  assert.equal(brokerUrl({ ...base, ws_url: null, ws_port: 8083 }, loc), "ws://pi.local:8083/mqtt");
  assert.equal(brokerUrl({ ...base, ws_url: null, ws_port: null }, loc), "ws://pi.local:8080/mqtt");
  assert.equal(brokerUrl({ ...base, ws_url: null, ws_port: null }, { protocol: "https:", hostname: "cam.example", port: "" }), "wss://cam.example/mqtt");
  assert.equal(brokerUrl({ ...base, ws_url: null, ws_port: 8083 }, { protocol: "http:", hostname: "[::1]", port: "8080" }), "ws://[::1]:8083/mqtt");
  assert.equal(brokerUrl({ ...base, ws_url: null, ws_port: 8083, ws_path: "ws" }, loc), "ws://pi.local:8083/ws");
});

/** An RGBA band as the browser would decode a stamped frame. */
function band(width, counter, ms, noise = 0) {
  const px = new Uint8ClampedArray(width * 16 * 4);
  const cw = Math.floor(width / 64);
  const bits = (BigInt(counter) << 32n) | BigInt(ms);
  for (let y = 0; y < 16; y++) {
    for (let x = 0; x < width; x++) {
      const cell = Math.floor(x / cw);
      const on = cell < 64 && ((bits >> BigInt(63 - cell)) & 1n) === 1n;
      const v = (on ? 255 : 0) + (noise ? Math.round((Math.random() * 2 - 1) * noise) : 0);
      const i = (y * width + x) * 4;
      px[i] = px[i + 1] = px[i + 2] = v;
      px[i + 3] = 255;
    }
  }
  return px;
}

test("stamps are read back, noise or not, and refused when absent", () => {
  for (const [w, counter, ms] of [[640, 1, 2], [1280, 0xdeadbeef, 0xfffffffe], [256, 12345, 987654321], [321, 0, 0]]) {
    assert.deepEqual(readStamp(band(w, counter, ms), w, 16), { counter, ms }, `${w}`);
    assert.deepEqual(readStamp(band(w, counter, ms, 40), w, 16), { counter, ms }, `${w} noisy`);
  }
  // A mid-grey picture carries no stamp.
  const grey = new Uint8ClampedArray(640 * 16 * 4).fill(128);
  assert.equal(readStamp(grey, 640, 16), null);
  assert.equal(readStamp(band(255, 1, 1), 255, 16), null);
  assert.equal(readStamp(new Uint8ClampedArray(10), 640, 16), null);
  assert.equal(readStamp(band(640, 1, 1), 640, 15), null);
});

test("millisecond differences wrap at 2^32", () => {
  assert.equal(diffMod32(1000, 900), 100);
  assert.equal(diffMod32(5, 4294967290), 11);
  assert.equal(diffMod32(4294967290, 5), -11);
  assert.equal(diffMod32(4294967296 + 50, 40), 10);
});

test("the clock map trusts the fastest ping", () => {
  const c = new ClockMap();
  assert.equal(c.offsetMs, null);
  assert.equal(c.deviceMs(5), null);
  // Device clock = page clock + 1000 ms. A slow ping skews its estimate.
  c.add(100, (100 + 40 + 1000) * 1000, 200);
  c.add(300, (300 + 2 + 1000) * 1000, 304);
  c.add(500, (500 + 30 + 1000) * 1000, 540);
  assert.equal(c.offsetMs, 1000);
  assert.equal(c.deviceMs(10), 1010);
  assert.equal(c.lastRttMs, 40);
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 2, 3]), 2.5);
  assert.equal(median([]), null);
});
