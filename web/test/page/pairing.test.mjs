// The built viewer page (web/dist) in Debian's Chromium against a real
// Mosquitto and a stand-in device: `npm run test:page`.
//
// The stand-in speaks protocol version 2 with Node's own crypto (not the
// page's code): it checks the page's signatures and macs, refuses role
// `control`, answers role `view` with a real SDP answer made by a second
// Chromium page, and forges messages the page must ignore. An HTTP server
// here plays the daemon's: the page's files, config.json, ice.json, claim.
//
// Without Chromium or Mosquitto the tests say why and pass, unless
// CAMPEER_REQUIRE_BROWSER=1.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { createServer as netServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import mqtt from "mqtt";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "..", "..", "dist");
const CHROMIUM = process.env.CAMPEER_CHROMIUM || "/usr/bin/chromium";
const MOSQUITTO = "/usr/sbin/mosquitto";
const missing = [CHROMIUM, MOSQUITTO, "/usr/bin/mosquitto_passwd", join(dist, "app.js")].filter((p) => !existsSync(p));
const skip = missing.length > 0 && process.env.CAMPEER_REQUIRE_BROWSER !== "1" ? `missing ${missing.join(", ")}` : false;

const DEVICE = "cam1";
const SECRET = "Zm9vYmFyYmF6cXV4LXRlc3Qtc2VjcmV0LTAxMjM0NTY";
const NONCE = "AAECAwQFBgcICQoLDA0ODw";
// The same CSP as the daemon's, so that a violation shows here too.
const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
  "media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; " +
  "frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const b64u = (buf) => buf.toString("base64").replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const mac = (key, text) => createHmac("sha256", key).update(text, "utf8").digest();
const mqttPassword = (secret) => b64u(mac(secret, `campeer-mqtt-v2\n${DEVICE}`));
const candBody = (c) =>
  c === null ? "end" : `${c.candidate}\n${c.sdpMid ?? ""}\n${c.sdpMLineIndex === null || c.sdpMLineIndex === undefined ? "" : c.sdpMLineIndex}`;
const msgMac = (k, dir, type, body) => b64u(mac(k, `campeer-msg-v2\n${dir}\n${type}\n${body}`));

async function freePort() {
  return new Promise((resolve) => {
    const s = netServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function until(what, fn, ms = 15000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

let dir, mosq, http, browser, device;
const ports = {};
const site = { config: {}, requests: [], claimed: false };

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), "campeer-page-"));
  // Mosquitto started as root reads its files as the user `mosquitto`.
  chmodSync(dir, 0o755);
  ports.tcp = await freePort();
  ports.ws = await freePort();
  ports.http = await freePort();
  const pw = join(dir, "passwd");
  execFileSync("/usr/bin/mosquitto_passwd", ["-b", "-c", pw, "phone", mqttPassword(SECRET)]);
  execFileSync("/usr/bin/mosquitto_passwd", ["-b", pw, "device", "device-password"]);
  chmodSync(pw, 0o644);
  writeFileSync(
    join(dir, "mosquitto.conf"),
    [`listener ${ports.tcp} 127.0.0.1`, `listener ${ports.ws} 127.0.0.1`, "protocol websockets", "allow_anonymous false", `password_file ${pw}`, "persistence false", ""].join("\n"),
  );
  mosq = spawn(MOSQUITTO, ["-c", join(dir, "mosquitto.conf")], { stdio: "ignore" });

  http = createServer((req, res) => {
    site.requests.push({ method: req.method, url: req.url, authorization: req.headers.authorization ?? null, type: req.headers["content-type"] ?? null });
    const path = req.url.split("?")[0];
    const send = (status, type, body) => {
      res.writeHead(status, { "Content-Type": type, "Content-Security-Policy": CSP, "Cache-Control": "no-store" });
      res.end(body);
    };
    if (path === "/config.json") return send(200, "application/json", JSON.stringify(site.config));
    if (path === "/ice.json") {
      if (site.config.auth === "open" || req.headers.authorization === `Bearer phone:${mqttPassword(SECRET)}`) {
        return send(200, "application/json", JSON.stringify({ ice_servers: [] }));
      }
      return send(401, "text/plain", "unauthorized\n");
    }
    if (path === "/claim" && req.method === "POST") {
      if (site.claimed) return send(409, "text/plain", "already claimed\n");
      site.claimed = true;
      site.config = { ...site.config, claimable: false };
      return send(200, "application/json", JSON.stringify({ pair: `phone.${SECRET}` }));
    }
    const files = { "/": ["index.html", "text/html"], "/app.js": ["app.js", "text/javascript"], "/style.css": ["style.css", "text/css"] };
    const f = files[path];
    if (!f) return send(404, "text/plain", "not found\n");
    send(200, f[1], readFileSync(join(dist, f[0])));
  });
  await new Promise((r) => http.listen(ports.http, "127.0.0.1", r));

  const { chromium } = await import("playwright-core");
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-features=WebRtcHideLocalIpsWithMdns", "--autoplay-policy=no-user-gesture-required"],
  });
  device = await until("the broker", async () => {
    try {
      return await mqtt.connectAsync(`mqtt://127.0.0.1:${ports.tcp}`, { username: "device", password: "device-password", reconnectPeriod: 0 });
    } catch {
      return null;
    }
  });
});

after(async () => {
  if (skip) return;
  await device?.endAsync(true).catch(() => {});
  await browser?.close().catch(() => {});
  http?.close();
  mosq?.kill();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const signedConfig = () => ({
  device_id: DEVICE,
  prefix: "campeer",
  ws_url: null,
  ws_port: ports.ws,
  ws_path: "/",
  auth: "signed",
  own_broker: true,
  claimable: true,
  ice_servers: [],
});

async function openPage(url, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const sockets = [];
  const problems = [];
  page.on("websocket", (ws) => sockets.push(ws.url()));
  page.on("console", (m) => m.type() === "error" && problems.push(m.text()));
  page.on("pageerror", (e) => problems.push(`uncaught: ${e.message}`));
  await page.goto(url, { waitUntil: "load" });
  return { context, page, sockets, problems };
}

const st = (page, expr) => page.evaluate(expr);

/** With CAMPEER_SCREENSHOTS=DIR, saves what the page looks like at each step. */
async function shot(page, name) {
  const d = process.env.CAMPEER_SCREENSHOTS;
  if (d) await page.screenshot({ path: join(d, `${name}.png`), fullPage: true });
}

test("signed own-broker device: pairing prompt, claim, role fallback, macs both ways", { skip, timeout: 90_000 }, async () => {
  site.config = signedConfig();
  site.claimed = false;
  const base = `http://127.0.0.1:${ports.http}/`;
  // A phone's width: everything must fit.
  const { context, page, sockets } = await openPage(base, { width: 375, height: 800 });

  // No key: the prompt and the claim button, no broker connection, no video.
  await until("the pairing prompt", () => st(page, "window.campeer.state === 'need-key' && !document.getElementById('card-pair').hidden"));
  assert.equal(await st(page, "document.getElementById('claim-box').hidden"), false);
  assert.equal(await st(page, "document.getElementById('open-banner').hidden"), true);
  await new Promise((r) => setTimeout(r, 500));
  assert.deepEqual(sockets, [], "no MQTT before pairing on the device's own broker");
  assert.equal(await st(page, "window.campeer.mqtt"), "off");
  assert.ok((await st(page, "document.documentElement.scrollWidth")) <= 375);
  await shot(page, "pair-prompt");

  // The stand-in device: retained presence with a nonce and an output.
  const B = `campeer/${DEVICE}`;
  await device.subscribeAsync(`${B}/session/+/in`, { qos: 1 });
  const inbox = [];
  device.on("message", (topic, payload) => inbox.push({ topic, msg: JSON.parse(payload.toString()) }));
  const presence = {
    state: "online",
    device: DEVICE,
    protocol: 2,
    auth: "signed",
    nonce: NONCE,
    sessions: 0,
    max_sessions: 4,
    video: { codec: "H264", width: 640, height: 480, fps: 30 },
    audio: null,
    controls: [{ name: "led", direction: "output" }],
  };
  await device.publishAsync(`${B}/status`, JSON.stringify(presence), { qos: 1, retain: true });

  // Claim: the link is shown, the key stored, the broker login works.
  await page.click("#claim");
  await until("the claim note", () => st(page, "!document.getElementById('claim-note').hidden"));
  await shot(page, "claimed");
  const link = await st(page, "document.getElementById('claim-link').value");
  assert.equal(link, `${base}#pair=phone.${SECRET}`);
  const claim = site.requests.find((r) => r.url === "/claim");
  assert.equal(claim.method, "POST");
  assert.equal(claim.type, "application/json");
  const stored = JSON.parse(await st(page, `localStorage.getItem('campeer.key.campeer/${DEVICE}')`));
  assert.equal(stored.id, "phone");
  assert.equal(stored.secret, SECRET);
  await until("the broker", () => st(page, "window.campeer.mqtt === 'connected'"));
  const ice = site.requests.filter((r) => r.url === "/ice.json");
  assert.ok(ice.length >= 1);
  assert.equal(ice.at(-1).authorization, `Bearer phone:${mqttPassword(SECRET)}`);

  // First offer: role control, signed over the nonce. Refused (no mac: none exists yet).
  const firstOffer = await until("an offer", () => inbox.find((m) => m.msg.type === "offer"));
  const sid1 = firstOffer.topic.split("/")[3];
  const a1 = firstOffer.msg.auth;
  assert.equal(a1.key, "phone");
  assert.equal(a1.role, "control");
  assert.equal(a1.nonce, NONCE);
  assert.equal(a1.sig, b64u(mac(SECRET, `campeer-offer-v2\n${DEVICE}\n${sid1}\ncontrol\n${NONCE}\n${firstOffer.msg.sdp}`)));
  await device.publishAsync(`${B}/session/${sid1}/out`, JSON.stringify({ type: "error", code: "unauthorized", message: "role" }), { qos: 1 });

  // Second offer: role view, on a new sid.
  const second = await until("the view offer", () => inbox.find((m) => m.msg.type === "offer" && m.msg.auth.role === "view"));
  const sid2 = second.topic.split("/")[3];
  assert.notEqual(sid2, sid1);
  const sig2 = b64u(mac(SECRET, `campeer-offer-v2\n${DEVICE}\n${sid2}\nview\n${NONCE}\n${second.msg.sdp}`));
  assert.equal(second.msg.auth.sig, sig2);
  const K = mac(SECRET, `campeer-session-v2\n${sig2}`);

  // The answer comes from a second Chromium page playing the device's peer.
  const devPage = await context.newPage();
  await devPage.goto(`${base}config.json`);
  const answerSdp = await devPage.evaluate(async (offer) => {
    const pc = new RTCPeerConnection();
    window.pc = pc;
    const canvas = document.createElement("canvas");
    canvas.width = 320;
    canvas.height = 240;
    const ctx = canvas.getContext("2d");
    let n = 0;
    setInterval(() => {
      ctx.fillStyle = `hsl(${n++ % 360} 80% 50%)`;
      ctx.fillRect(0, 0, 320, 240);
    }, 33);
    const track = canvas.captureStream(30).getVideoTracks()[0];
    await pc.setRemoteDescription({ type: "offer", sdp: offer });
    const video = pc.getTransceivers().find((t) => t.receiver.track.kind === "video");
    video.direction = "sendonly";
    await video.sender.replaceTrack(track);
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    await new Promise((r) => {
      if (pc.iceGatheringState === "complete") r();
      pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && r());
    });
    return pc.localDescription.sdp;
  }, second.msg.sdp);
  const out2 = `${B}/session/${sid2}/out`;
  // A forged answer first: ignored.
  await device.publishAsync(out2, JSON.stringify({ type: "answer", sdp: answerSdp, mac: "AAAA" }), { qos: 1 });
  await until("the forged answer counted", () => st(page, "window.campeer.unverified >= 1"));
  assert.equal(await st(page, "window.campeer.state"), "signaling");
  await device.publishAsync(out2, JSON.stringify({ type: "answer", sdp: answerSdp, mac: msgMac(K, "out", "answer", answerSdp) }), { qos: 1 });

  // Relay the page's candidates to the device's peer, checking each mac.
  let relayed = 0;
  const relay = setInterval(async () => {
    for (const m of inbox.splice(0)) {
      if (!m.topic.includes(sid2) || m.msg.type !== "candidate") continue;
      assert.equal(m.msg.mac, msgMac(K, "in", "candidate", candBody(m.msg.candidate)), JSON.stringify(m.msg));
      relayed++;
      await devPage.evaluate((c) => (c ? window.pc.addIceCandidate(c) : window.pc.addIceCandidate()), m.msg.candidate).catch(() => {});
    }
  }, 50);
  try {
    await until("video", () => st(page, "window.campeer.state === 'playing'"), 30_000);
  } finally {
    clearInterval(relay);
  }
  assert.ok(relayed >= 1, "the page trickled mac'd candidates");
  assert.equal(await st(page, "window.campeer.role"), "view");
  await until("the led's switch", () => st(page, "!!document.querySelector('button[data-control=\"led\"]')"));
  assert.equal(await st(page, "document.querySelector('button[data-control=\"led\"]').disabled"), true);
  assert.equal(await st(page, "document.getElementById('controls-view-only').hidden"), false);
  const kept = JSON.parse(await st(page, `localStorage.getItem('campeer.key.campeer/${DEVICE}')`));
  assert.equal(kept.role, "view", "the accepted view role is kept for the key");

  // Forged bye and error on the live session: ignored, the picture goes on.
  const before = await st(page, "window.campeer.unverified");
  await device.publishAsync(out2, JSON.stringify({ type: "bye", reason: "shutdown" }), { qos: 1 });
  await device.publishAsync(out2, JSON.stringify({ type: "error", code: "internal", message: "x", mac: "bad" }), { qos: 1 });
  await until("two more unverified", () => st(page, `window.campeer.unverified >= ${before + 2}`));
  await new Promise((r) => setTimeout(r, 2000)); // past the unverified-error grace
  assert.equal(await st(page, "window.campeer.state"), "playing");
  assert.equal(await st(page, "window.campeer.sid"), sid2);
  assert.equal(await st(page, "document.getElementById('unverified').hidden"), false);
  assert.ok((await st(page, "document.documentElement.scrollWidth")) <= 375);
  await shot(page, "playing-view");

  // A verified bye ends it; the page's bye on leaving is mac'd too.
  await device.publishAsync(out2, JSON.stringify({ type: "bye", reason: "timeout", mac: msgMac(K, "out", "bye", "timeout") }), { qos: 1 });
  await until("the session to end", () => st(page, `window.campeer.sid !== '${sid2}'`));
  await context.close();
});

test("a pairing link is taken out of the address; a refused key stops without a reconnect loop", { skip, timeout: 60_000 }, async () => {
  site.config = { ...signedConfig(), claimable: false };
  const base = `http://127.0.0.1:${ports.http}/`;
  const { context, page, sockets, problems } = await openPage(`${base}#pair=phone.not-the-secret`);
  await until("the fragment to go", async () => (await page.evaluate("location.hash")) === "");
  assert.equal(page.url(), base);
  const stored = JSON.parse(await st(page, `localStorage.getItem('campeer.key.campeer/${DEVICE}')`));
  assert.deepEqual(stored, { id: "phone", secret: "not-the-secret", role: null });
  await until("the refusal", () => st(page, "window.campeer.state === 'unauthorized' && window.campeer.keyRefused !== null"));
  assert.match(await st(page, "document.getElementById('pair-status').textContent"), /refused by the device/);
  assert.equal(await st(page, "document.getElementById('pair-prompt').hidden"), false);
  const n = sockets.length;
  assert.ok(n >= 1 && n <= 2, `connections: ${n}`);
  await new Promise((r) => setTimeout(r, 4000));
  assert.equal(sockets.length, n, "no reconnect loop after a refusal");
  assert.equal(await st(page, "window.campeer.state"), "unauthorized");
  await shot(page, "key-refused");

  // Pasting the right key (as id.secret) pairs again.
  await page.fill("#pair-input", `phone.${SECRET}`);
  await page.click("#pair-submit");
  await until("the broker", () => st(page, "window.campeer.mqtt === 'connected'"));
  await until("the key card", () => st(page, "!document.getElementById('card-key').hidden && document.getElementById('card-pair').hidden"));
  // Forget: back to the prompt, off the broker.
  await page.click("#key-forget");
  await until("the prompt again", () => st(page, "window.campeer.state === 'need-key' && window.campeer.mqtt === 'off'"));
  assert.equal(await st(page, `localStorage.getItem('campeer.key.campeer/${DEVICE}')`), null);
  assert.deepEqual(problems.filter((p) => !/WebSocket|401|ice\.json|Failed to load resource/.test(p)), []);
  await context.close();
});

test("an open device shows its warning banner and fits a 375 px screen", { skip, timeout: 30_000 }, async () => {
  site.config = { ...signedConfig(), auth: "open", own_broker: false, claimable: false, ws_url: `ws://device:device-password@127.0.0.1:${ports.ws}/` };
  await device.publishAsync(`campeer/${DEVICE}/status`, JSON.stringify({ state: "online", device: DEVICE, protocol: 2, auth: "open", video: null, audio: null }), {
    qos: 1,
    retain: true,
  });
  const { context, page } = await openPage(`http://127.0.0.1:${ports.http}/`, { width: 375, height: 740 });
  await until("the banner", () => st(page, "!document.getElementById('open-banner').hidden"));
  assert.match(await st(page, "document.getElementById('open-banner').textContent"), /anyone who can reach it/);
  assert.equal(await st(page, "document.getElementById('card-pair').hidden"), true);
  await until("the broker", () => st(page, "window.campeer.mqtt === 'connected'"));
  // No header on an open device's ice.json.
  const ice = site.requests.filter((r) => r.url === "/ice.json").at(-1);
  assert.equal(ice.authorization, null);
  await shot(page, "open-banner");
  // Nothing wider than the screen.
  assert.ok((await st(page, "document.documentElement.scrollWidth")) <= 375);
  await context.close();
});
