// Unit tests of the relay hand-over
// (docs/protocol.md#watching-through-a-relay-campeer-extension): reading and checking the `relay` object of a
// `busy` error, and the Janus Streaming client against a fake Janus:
// `npm test`.
//
// The vector is computed here with Node's own crypto (not with the code
// under test), and pinned, so that the device's side can check the same
// values. The same with openssl:
//
//   K=$(printf 'campeer-session-v2\nabc' | openssl dgst -sha256 -hmac 's3cret-key' -hex | awk '{print $NF}')
//   printf 'campeer-relay-v2\nsid12345abcd' | openssl dgst -sha256 -mac HMAC -macopt hexkey:$K -hex   # the pad
//   printf 'campeer-relay-v2\nhttp://127.0.0.1:8088/janus\n77\ntU6_i4IHSggPy1AErL4' \
//     | openssl dgst -sha256 -mac HMAC -macopt hexkey:$K -binary | basenc --base64url | tr -d '='   # relay.mac
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import {
  readRelay,
  relayMac,
  relayPad,
  sealPin,
  b64uDecode,
  reachableFrom,
  parseOut,
  judge,
  sessionKey,
  messageMac,
  JanusWatch,
} from "../.test-build/lib.mjs";

const b64u = (buf) => Buffer.from(buf).toString("base64").replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const hmac = (key, text) => createHmac("sha256", key).update(text, "utf8").digest();
const hex = (u8) => Buffer.from(u8).toString("hex");

const SECRET = "s3cret-key";
const SIG = "abc";
const SID = "sid12345abcd";
const JANUS = "http://127.0.0.1:8088/janus";
const MOUNTPOINT = 77;
const PIN = "pin-0123456789";

// With Node's crypto.
const K_NODE = hmac(SECRET, `campeer-session-v2\n${SIG}`);
const PAD_NODE = hmac(K_NODE, `campeer-relay-v2\n${SID}`);
const PIN_X_NODE = b64u(Buffer.from(PIN).map((b, i) => b ^ PAD_NODE[i]));
const MAC_NODE = b64u(hmac(K_NODE, `campeer-relay-v2\n${JANUS}\n${MOUNTPOINT}\n${PIN_X_NODE}`));
const OUTER_NODE = b64u(hmac(K_NODE, "campeer-msg-v2\nout\nerror\nbusy"));

// The same, pinned.
const VECTOR = {
  k: "006d6773188f64a5e062c4d2ce0492337f17cec0dd91283ccb1de298934dcf21",
  pad: "c527d1a6b236783b3bfe663394874a4ed9bf3921913593fc8fb247fbf3adaad0",
  pinX: "tU6_i4IHSggPy1AErL4",
  mac: "46BVHrT-WkaBmTAsOrU8fpra9b3cYxFhfNyly36tzwM",
  outer: "bRDbuQEEJLM5-pEpvTrp45MAbUIxe2856Nh_fg465EM",
};

const K = sessionKey(SECRET, SIG);
const signed = { sid: SID, signed: true, k: K };
const open = { sid: SID, signed: false, k: null };
const good = { janus: JANUS, mountpoint: MOUNTPOINT, pin_x: VECTOR.pinX, mac: VECTOR.mac };
/** A relay object with a valid mac over whatever fields it is given. */
const macd = (r) => ({ ...r, mac: relayMac(K, r.janus, r.mountpoint, r.pin_x) });

test("the relay vector: Node's crypto, the pinned values and the page agree", () => {
  assert.equal(hex(K_NODE), VECTOR.k);
  assert.equal(hex(PAD_NODE), VECTOR.pad);
  assert.equal(PIN_X_NODE, VECTOR.pinX);
  assert.equal(MAC_NODE, VECTOR.mac);
  assert.equal(OUTER_NODE, VECTOR.outer);
  assert.equal(hex(K), VECTOR.k);
  assert.equal(hex(relayPad(K, SID)), VECTOR.pad);
  assert.equal(sealPin(K, SID, PIN), VECTOR.pinX);
  assert.equal(relayMac(K, JANUS, MOUNTPOINT, VECTOR.pinX), VECTOR.mac);
  assert.equal(messageMac(K, "out", { type: "error", code: "busy" }), VECTOR.outer);
  console.log(`relay vector: K=${VECTOR.k} pin_x=${VECTOR.pinX} relay.mac=${VECTOR.mac} outer mac=${VECTOR.outer}`);
});

test("a signed relay decrypts its PIN when its mac verifies", () => {
  assert.deepEqual(readRelay(good, signed), { ok: true, relay: { janus: JANUS, mountpoint: MOUNTPOINT, pin: PIN } });
  // Every length up to 32 bytes, and the empty PIN.
  for (const pin of ["", "1", "x".repeat(31), "~".repeat(32), " !09AZaz~"]) {
    const r = macd({ janus: JANUS, mountpoint: 5, pin_x: sealPin(K, SID, pin) });
    assert.deepEqual(readRelay(r, signed), { ok: true, relay: { janus: JANUS, mountpoint: 5, pin } }, pin);
  }
  // https and a trailing slash are fine; the mac covers the text as sent.
  const https = macd({ janus: "https://relay.example/janus/", mountpoint: 1, pin_x: VECTOR.pinX });
  assert.equal(readRelay(https, signed).relay.janus, "https://relay.example/janus/");
  // Another session's sid gives another pad: not this PIN.
  const other = readRelay(good, { ...signed, sid: "sid12345abce" });
  assert.ok(!other.ok || other.relay.pin !== PIN);
});

test("a signed relay whose mac does not verify is refused", () => {
  const why = (r, s = signed) => {
    const c = readRelay(r, s);
    assert.equal(c.ok, false, JSON.stringify(r));
    return c.why;
  };
  const flipped = VECTOR.mac[0] === "A" ? `B${VECTOR.mac.slice(1)}` : `A${VECTOR.mac.slice(1)}`;
  assert.match(why({ ...good, mac: flipped }), /mac/);
  // Each covered field.
  assert.match(why({ ...good, mountpoint: 78 }), /mac/);
  assert.match(why({ ...good, janus: "http://127.0.0.1:8089/janus" }), /mac/);
  assert.match(why({ ...good, pin_x: sealPin(K, SID, "pin-0123456788") }), /mac/);
  // Another key (another offer's signature).
  assert.match(why(good, { ...signed, k: sessionKey(SECRET, "abd") }), /mac/);
  assert.match(why(good, { ...signed, k: null }), /key/);
  const { mac: _mac, ...noMac } = good;
  assert.match(why(noMac), /mac is missing/);
  // A clear PIN from a signed device is not taken, with or without a mac.
  assert.match(why({ janus: JANUS, mountpoint: MOUNTPOINT, pin: PIN }), /pin_x/);
  assert.match(why({ janus: JANUS, mountpoint: MOUNTPOINT, pin: PIN, mac: VECTOR.mac }), /pin_x/);
});

test("relay fields are checked: mountpoint, janus, PIN length and text", () => {
  const why = (r, s = signed) => {
    const c = readRelay(r, s);
    assert.equal(c.ok, false, JSON.stringify(r));
    return c.why;
  };
  for (const m of [0, -1, 1.5, "77", null, undefined, 2 ** 53, Number.NaN, true]) {
    assert.match(why({ ...good, mountpoint: m }), /mountpoint/, String(m));
    assert.match(why({ janus: JANUS, mountpoint: m, pin: PIN }, open), /mountpoint/, String(m));
  }
  for (const j of [
    "ftp://127.0.0.1/janus",
    "ws://127.0.0.1:8188/",
    "javascript:alert(1)",
    "data:text/plain,x",
    "127.0.0.1:8088/janus",
    "not a url",
    "",
    "http://user:pw@127.0.0.1:8088/janus",
    "http://127.0.0.1:8088/janus?x=1",
    "http://127.0.0.1:8088/janus#x",
    `http://h/${"a".repeat(2048)}`,
  ]) {
    // Refused before the mac is looked at, and with a valid mac too.
    assert.match(why({ ...good, janus: j }), /janus/, j);
    assert.match(why(macd({ ...good, janus: j })), /janus/, j);
  }
  assert.match(why({ ...good, janus: 8088 }), /janus/);
  assert.match(why(null), /object/);
  assert.match(why([good]), /object/);
  assert.match(why("relay"), /object/);
  // pin_x: at most 32 bytes, base64url without padding, a printable PIN.
  const long = b64u(Buffer.alloc(33, 1));
  assert.match(why(macd({ ...good, pin_x: long })), /32 bytes/);
  assert.match(why(macd({ ...good, pin_x: `${VECTOR.pinX}=` })), /base64url/);
  assert.match(why(macd({ ...good, pin_x: "tU6/i4IHSggPy1AErL4" })), /base64url/);
  assert.match(why(macd({ ...good, pin_x: "tU6_i4IHSggPy1AErL5" })), /base64url/); // non-canonical tail
  const control = b64u(Buffer.from("pin\n").map((b, i) => b ^ PAD_NODE[i]));
  assert.match(why(macd({ ...good, pin_x: control })), /printable/);
  const utf8 = b64u(Buffer.from("pïn").map((b, i) => b ^ PAD_NODE[i]));
  assert.match(why(macd({ ...good, pin_x: utf8 })), /printable/);
  assert.throws(() => sealPin(K, SID, "x".repeat(33)));
});

test("an open device's relay carries the PIN in clear", () => {
  assert.deepEqual(readRelay({ janus: JANUS, mountpoint: MOUNTPOINT, pin: PIN }, open), {
    ok: true,
    relay: { janus: JANUS, mountpoint: MOUNTPOINT, pin: PIN },
  });
  const why = (r) => {
    const c = readRelay(r, open);
    assert.equal(c.ok, false, JSON.stringify(r));
    return c.why;
  };
  assert.match(why({ janus: JANUS, mountpoint: MOUNTPOINT }), /pin/);
  // pin_x means nothing without a key.
  assert.match(why({ janus: JANUS, mountpoint: MOUNTPOINT, pin_x: VECTOR.pinX, mac: VECTOR.mac }), /pin/);
  assert.match(why({ janus: JANUS, mountpoint: MOUNTPOINT, pin: "x".repeat(33) }), /32 bytes/);
  assert.match(why({ janus: JANUS, mountpoint: MOUNTPOINT, pin: "pïn" }), /ASCII/);
  assert.match(why({ janus: JANUS, mountpoint: MOUNTPOINT, pin: 1234 }), /pin/);
  assert.equal(readRelay({ janus: JANUS, mountpoint: MOUNTPOINT, pin: "x".repeat(32) }, open).ok, true);
});

test("a busy error keeps its relay object; the outer mac is the ordinary one", () => {
  const msg = { type: "error", code: "busy", message: "watch through the relay", relay: good, mac: VECTOR.outer };
  const m = parseOut(JSON.stringify(msg));
  assert.deepEqual(m, msg);
  assert.equal(judge(m, { signed: true, k: K, answered: false }), "apply");
  // Without a relay, the message is as before (no relay key at all).
  assert.deepEqual(parseOut('{"type":"error","code":"busy","message":"full"}'), { type: "error", code: "busy", message: "full", mac: null });
  assert.deepEqual(parseOut('{"type":"error","code":"busy","relay":null}'), { type: "error", code: "busy", message: "", mac: null });
  // A wrong outer mac makes it an unverified refusal, whatever its relay.
  assert.equal(judge({ ...m, mac: VECTOR.mac }, { signed: true, k: K, answered: false }), "unverified-error");
});

test("base64url decoding is strict", () => {
  assert.deepEqual(Array.from(b64uDecode("")), []);
  assert.deepEqual(Array.from(b64uDecode("AQID")), [1, 2, 3]);
  assert.deepEqual(Array.from(b64uDecode("_-8")), [0xff, 0xef]);
  for (const bad of ["AQID=", "A", "AQ+D", "AQ/D", "AQ D", "AR"]) assert.equal(b64uDecode(bad), null, bad);
});

test("an https: page cannot reach an http: relay", () => {
  assert.ok(reachableFrom("http:", "http://r/janus"));
  assert.ok(reachableFrom("http:", "https://r/janus"));
  assert.ok(reachableFrom("https:", "https://r/janus"));
  assert.ok(!reachableFrom("https:", "http://r/janus"));
});

// ---- the Janus client, against a fake Janus --------------------------------

/** A stand-in for Janus's HTTP API: answers requests, and feeds long polls from a queue. */
function fakeJanus({ events = [], failAttach = null, pollStatus = 200 } = {}) {
  const requests = [];
  const queue = [...events];
  const base = "http://127.0.0.1:8088/janus";
  const reply = (body, status = 200) => new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
  const fetch = async (url, init = {}) => {
    const body = init.body ? JSON.parse(init.body) : null;
    requests.push({ url, method: init.method ?? "GET", body, contentType: init.headers?.["Content-Type"] ?? null });
    if ((init.method ?? "GET") === "GET") {
      assert.match(url, /^http:\/\/127\.0\.0\.1:8088\/janus\/111\?rid=\d+&maxev=1$/);
      if (pollStatus !== 200) return new Response("", { status: pollStatus });
      if (queue.length) return reply(queue.shift());
      // Nothing to say: hold the poll until the client aborts it.
      return new Promise((_, reject) => {
        init.signal?.addEventListener("abort", () => reject(Object.assign(new Error("aborted"), { name: "AbortError" })));
      });
    }
    const t = body.transaction;
    assert.equal(typeof t, "string");
    if (url === base && body.janus === "create") return reply({ janus: "success", transaction: t, data: { id: 111 } });
    if (url === `${base}/111` && body.janus === "attach") {
      if (failAttach) return reply({ janus: "error", transaction: t, error: failAttach });
      return reply({ janus: "success", transaction: t, session_id: 111, data: { id: 222 } });
    }
    if (url === `${base}/111` && (body.janus === "keepalive" || body.janus === "destroy")) return reply({ janus: body.janus === "destroy" ? "success" : "ack", transaction: t });
    if (url === `${base}/111/222` && (body.janus === "message" || body.janus === "trickle")) return reply({ janus: "ack", session_id: 111, transaction: t });
    return reply({ janus: "error", transaction: t, error: { code: 453, reason: "unexpected request" } });
  };
  return { fetch, requests };
}

/** A peer connection that answers at once, with its candidates gathered. */
class FakePeer extends EventTarget {
  constructor(config) {
    super();
    this.config = config;
    this.connectionState = "new";
    this.iceGatheringState = "new";
    this.localDescription = null;
    this.remote = null;
    this.closed = false;
  }
  async setRemoteDescription(d) {
    this.remote = d;
  }
  async createAnswer() {
    return { type: "answer", sdp: "v=0\r\ns=fake answer\r\n" };
  }
  async setLocalDescription(d) {
    this.localDescription = { type: d.type, sdp: `${d.sdp}a=candidate:1 1 udp 1 192.0.2.1 9 typ host\r\n` };
    this.iceGatheringState = "complete";
  }
  async addIceCandidate() {}
  close() {
    this.closed = true;
  }
}

const OFFER_EVENT = {
  janus: "event",
  session_id: 111,
  sender: 222,
  plugindata: { plugin: "janus.plugin.streaming", data: { streaming: "event", result: { status: "preparing" } } },
  jsep: { type: "offer", sdp: "v=0\r\ns=janus offer\r\n" },
};

function watch(janus, target = { janus: JANUS, mountpoint: MOUNTPOINT, pin: PIN }) {
  const seen = { states: [], logs: [], peers: [] };
  let resolveEnded;
  seen.ended = new Promise((r) => (resolveEnded = r));
  const w = new JanusWatch(
    target,
    {
      iceServers: [{ urls: "stun:stun.example:3478" }],
      fetch: janus.fetch,
      peer: (config) => {
        const p = new FakePeer(config);
        seen.peers.push(p);
        return p;
      },
    },
    {
      state: (s) => seen.states.push(s),
      stream: () => {},
      log: (t) => seen.logs.push(t),
      ended: (message) => resolveEnded(message),
    },
  );
  return { w, seen };
}

const settle = () => new Promise((r) => setTimeout(r, 20));

test("Janus client: create, attach, watch with the PIN, answer with start, end on hangup", async () => {
  const janus = fakeJanus({
    events: [
      { janus: "keepalive" },
      OFFER_EVENT,
      { janus: "webrtcup", session_id: 111, sender: 222 },
      { janus: "event", plugindata: { data: { streaming: "event", result: { status: "started" } } } },
      { janus: "media", session_id: 111, sender: 222, type: "video", receiving: true },
      { janus: "slowlink", session_id: 111, sender: 222, uplink: false, lost: 12 },
      { janus: "hangup", session_id: 111, sender: 222, reason: "DTLS alert" },
    ],
  });
  const { w, seen } = watch(janus);
  await w.start();
  const message = await seen.ended;
  assert.match(message, /hung up \(DTLS alert\)/);
  await settle();
  const posts = janus.requests.filter((r) => r.method === "POST");
  assert.deepEqual(
    posts.map((r) => [r.url, r.body.janus]),
    [
      [JANUS, "create"],
      [`${JANUS}/111`, "attach"],
      [`${JANUS}/111/222`, "message"],
      [`${JANUS}/111/222`, "message"],
      [`${JANUS}/111`, "destroy"],
    ],
  );
  assert.equal(posts[1].body.plugin, "janus.plugin.streaming");
  assert.deepEqual(posts[2].body.body, { request: "watch", id: MOUNTPOINT, pin: PIN });
  assert.deepEqual(posts[3].body.body, { request: "start" });
  assert.equal(posts[3].body.jsep.type, "answer");
  assert.match(posts[3].body.jsep.sdp, /fake answer[\s\S]*a=candidate:/);
  assert.equal(posts[3].body.jsep.trickle, false);
  // Simple cross-origin requests: no JSON content type, no preflight.
  assert.ok(posts.every((r) => r.contentType === null));
  // Distinct transactions.
  assert.equal(new Set(posts.map((r) => r.body.transaction)).size, posts.length);
  // The offer reached a peer connection with the page's ICE servers, which is closed at the end.
  assert.equal(seen.peers.length, 1);
  assert.deepEqual(seen.peers[0].config, { iceServers: [{ urls: "stun:stun.example:3478" }] });
  assert.deepEqual(seen.peers[0].remote, { type: "offer", sdp: OFFER_EVENT.jsep.sdp });
  assert.ok(seen.peers[0].closed);
  assert.deepEqual(seen.states, ["connecting"]);
  assert.equal(w.state, "closed");
  assert.ok(seen.logs.some((l) => /WebRTC is up/.test(l)));
  assert.ok(seen.logs.some((l) => /slow link \(12 packets lost\)/.test(l)));
});

test("Janus client: a wrong PIN ends the watch with Janus's words", async () => {
  const janus = fakeJanus({
    events: [
      {
        janus: "event",
        session_id: 111,
        sender: 222,
        plugindata: { plugin: "janus.plugin.streaming", data: { streaming: "event", error_code: 457, error: "Unauthorized (wrong pin)" } },
      },
    ],
  });
  const { w, seen } = watch(janus);
  await w.start();
  assert.match(await seen.ended, /refused: Unauthorized \(wrong pin\) \(457\)/);
  assert.equal(seen.peers.length, 0);
});

test("Janus client: a forgotten session (404 on the poll, 458 on a request) ends the watch", async () => {
  const gone = fakeJanus({ pollStatus: 404 });
  const a = watch(gone);
  await a.w.start();
  assert.match(await a.seen.ended, /no such session/);

  const refused = fakeJanus({ failAttach: { code: 458, reason: "No such session 111" } });
  const b = watch(refused);
  await b.w.start();
  assert.match(await b.seen.ended, /No such session 111 \(458\)/);

  const down = { fetch: async () => Promise.reject(new TypeError("Failed to fetch")), requests: [] };
  const c = watch(down);
  await c.w.start();
  assert.match(await c.seen.ended, /Failed to fetch/);
});

test("Janus client: a stopped stream ends the watch; close() ends it quietly", async () => {
  const stopped = fakeJanus({ events: [OFFER_EVENT, { janus: "event", plugindata: { data: { streaming: "event", result: { status: "stopped" } } } }] });
  const a = watch(stopped);
  await a.w.start();
  assert.match(await a.seen.ended, /stream stopped/);

  const idle = fakeJanus();
  const b = watch(idle, { janus: `${JANUS}/`, mountpoint: 9, pin: "" });
  let ended = false;
  b.seen.ended.then(() => (ended = true));
  await b.w.start();
  await settle();
  const watchReq = idle.requests.find((r) => r.body?.body?.request === "watch");
  // The trailing slash is not doubled; an empty PIN is not sent.
  assert.equal(watchReq.url, `${JANUS}/111/222`);
  assert.deepEqual(watchReq.body.body, { request: "watch", id: 9 });
  b.w.close();
  await settle();
  assert.equal(ended, false);
  assert.equal(idle.requests.at(-1).body?.janus, "destroy");
  assert.equal(b.w.state, "closed");
});
