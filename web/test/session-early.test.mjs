// The video receiver's track is shown before the offer goes out, so the
// browser sets up its player while signaling travels (docs/viewer.md).
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { installFakes } from "./fakes.mjs";

let lib;
before(async () => {
  installFakes();
  lib = await import("../.test-build/lib.mjs");
});

/** Starts a session; returns what happened, in order. */
async function start(wantVideo) {
  const order = [];
  const sig = {
    publish: async (topic, payload) => void order.push(`publish ${JSON.parse(payload).type}`),
    subscribe: async () => void order.push("subscribe"),
    unsubscribe: () => {},
  };
  const events = {
    state() {},
    stream: (ms) => order.push(`stream ${ms.getTracks().map((t) => t.id).join(",")}`),
    rpc() {},
    notification() {},
    ended: (why) => order.push(`ended ${why.kind}`),
    unverified() {},
    notice() {},
  };
  const s = new lib.Session(
    { topics: new lib.Topics("campeer", "cam1"), deviceId: "cam1", iceServers: [], auth: null, wantVideo },
    sig,
    events,
  );
  await s.start();
  return order;
}

test("a device with video: its track is shown before the answer topic is even subscribed", async () => {
  const order = await start(true);
  assert.equal(order[0], "stream video-receiver", order.join(" | "));
  assert.equal(order[1], "subscribe", order.join(" | "));
});

test("a device without video: nothing is shown before the answer", async () => {
  const order = await start(false);
  assert.ok(!order.some((e) => e.startsWith("stream")), order.join(" | "));
  assert.ok(order.includes("publish offer"), order.join(" | "));
});

test("the bye a page going away sends as a beacon: only for an offered, live session", async () => {
  const sig = { publish: async () => {}, subscribe: async () => {}, unsubscribe: () => {} };
  const events = { state() {}, stream() {}, rpc() {}, notification() {}, ended() {}, unverified() {}, notice() {} };
  const s = new lib.Session(
    { topics: new lib.Topics("campeer", "cam1"), deviceId: "cam1", iceServers: [], auth: null, wantVideo: false },
    sig,
    events,
  );
  assert.equal(s.byeBeacon(), null, "no offer out yet");
  await s.start();
  assert.deepEqual(s.byeBeacon(), { sid: s.sid, json: '{"type":"bye"}' });
  s.close(false);
  assert.equal(s.byeBeacon(), null, "ended");
});
