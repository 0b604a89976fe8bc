// The video receiver's track is shown before the offer goes out, so the
// browser sets up its player while signaling travels (docs/viewer.md).
import { test, before } from "node:test";
import assert from "node:assert/strict";

const VIDEO_TRACK = { kind: "video", id: "video-receiver", stop() {} };

/** Just what Session touches before an answer. */
class FakePeer {
  addTransceiver(kind) {
    return { setCodecPreferences() {}, receiver: { track: kind === "video" ? VIDEO_TRACK : { kind, id: `${kind}-receiver`, stop() {} } } };
  }
  createDataChannel() {
    return { addEventListener() {} };
  }
  addEventListener() {}
  async createOffer() {
    return { type: "offer", sdp: "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n" };
  }
  async setLocalDescription() {}
  close() {}
}

let lib;
before(async () => {
  globalThis.RTCPeerConnection ??= FakePeer;
  globalThis.MediaStream ??= class {
    tracks = [];
    addTrack(t) {
      this.tracks.push(t);
    }
    getTracks() {
      return this.tracks;
    }
  };
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
