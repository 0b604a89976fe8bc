// The campeer viewer page: connects to the broker over MQTT/WebSocket,
// follows the device's presence, keeps one WebRTC session to it alive, and
// shows the video, live figures and the device's controls.
//
// Recovery: a dropped broker connection, an ICE failure, a device `bye`, a
// stalled picture or the device coming back online each lead to a new
// session, after a backoff that grows with each failure in a row and resets
// once a session plays. A refused key never leads to a retry: it needs the
// user (pair again).
//
// Relay (docs/protocol.md#watching-through-a-relay-campeer-extension): a device that refuses
// the offer `busy` with a relay object that checks out hands the page to
// its Janus relay. The page then watches there (relay.ts) with the same
// video element and figures, without the control channel, and when that
// stream ends it goes back to calling the device, with the same backoff.
//
// Authorization (docs/protocol.md#authorization-protocol-version-2): a pairing link (`#pair=id.secret`)
// gives the page a key, kept per device in localStorage. On a signed device
// the page logs in to the device's own broker with it, fetches its ICE
// servers with it, and signs each offer over the device's latest nonce,
// trying role `control` first and `view` once if that is refused.
//
// ICE servers (docs/protocol.md#ice-servers-for-viewers-ice_request): before an offer the page asks the
// device over MQTT (`ice_request`, signed with the key) and uses the
// servers only when the reply verifies; it keeps them until shortly before
// they expire. A device page answered `bad_request` (an older device) falls
// back to its /ice.json.
//
// Hosted anywhere (remote.ts): a link whose fragment names the device and
// the broker makes the page independent of the device's HTTP server: no
// config.json, no ice.json, no claim, no bye beacon.

import mqtt from "mqtt";
import type { MqttClient } from "mqtt";
import { ClockMap, median } from "./clock";
import { FrameTimes, LatencyWindows, Stage, describeStages } from "./latency";
import { AccessKey, Role, RoleLadder, mqttPassword } from "./auth";
import { StoredKey, keyFromFragment, pairValueOfFragment, pairingLink, parsePairingInput, parseStoredKey, storedKeyText } from "./pairing";
import {
  PageConfig,
  Presence,
  Topics,
  brokerUrl,
  effectiveAuth,
  newSid,
  parseIceServers,
  parseOut,
  parsePresence,
} from "./protocol";
import { IceAnswer, iceRequest, iceUsable, openIce, parseIceAnswer } from "./ice";
import { RemoteTarget, brokerReachableFrom, fragmentToKeep, parseStoredTarget, remoteConfig, storedTargetText, targetFromFragment } from "./remote";
import { Rpc, RpcError } from "./rpc";
import { forcedCodec } from "./codecs";
import { EndReason, Session, SessionState, Signaling, errText } from "./session";
import { JanusWatch, RelayState, RelayTarget, reachableFrom } from "./relay";
import { Stamp, readStamp } from "./stamp";
import { MqttState, Ui, fmtBitrate, fmtMs } from "./ui";

type ViewerState =
  | "loading"
  | "broker"
  | "offline"
  | "need-key"
  | "no-nonce"
  | "signaling"
  | "relay"
  | "connecting"
  | "connected"
  | "playing"
  | "reconnecting"
  | "unauthorized"
  | "unsupported"
  | "replaced";

interface ControlState {
  direction: "input" | "output";
  value: boolean | null;
}

/** Everything the page knows, on `window.campeer` for tests and curious users. */
interface Exposed {
  state: ViewerState;
  mqtt: MqttState;
  brokerUrl: string | null;
  device: Presence | null;
  auth: "open" | "signed";
  /** The id of the key the page holds for this device. */
  keyId: string | null;
  /** Why the device refused the key, when it did. */
  keyRefused: string | null;
  /** The role of the running (or last) session. */
  role: Role | null;
  /** Device messages ignored because their mac did not verify. */
  unverified: number;
  /**
   * Where the ICE servers came from: the device's `ice` reply, `ice.json`
   * (an older device), `config.json` (its public list, when the device
   * gave none), `none`, or null (not yet).
   */
  iceSource: "ice_request" | "ice.json" | "config.json" | "none" | null;
  /** When the servers in use stop working (Unix s, 0: never), from the device's reply. */
  iceExpires: number | null;
  /** The camera and broker of a page hosted off the device (from its link); null on the device's own page. */
  remote: RemoteTarget | null;
  /** The pairing link a claim produced. */
  claimLink: string | null;
  sid: string | null;
  sessions: number;
  /** The relay the page watches through (PIN left out), null when watching directly or not at all. */
  relay: { janus: string; mountpoint: number; state: RelayState } | null;
  /** How many times the page was handed to a relay. */
  relays: number;
  videoWidth: number;
  videoHeight: number;
  framesSeen: number;
  sessionFrames: number;
  lastStamp: Stamp | null;
  stampsRead: number;
  framesMissed: number;
  latencyMs: number | null;
  /** The last capture-to-display figures (ms) behind latencyMs, oldest first. */
  latencySamples: number[];
  /** The same frames' figures up to each stage of their way (latency.ts). */
  latencyStages: Record<Stage, number[]>;
  rttMs: number | null;
  pingRttMs: number | null;
  clockOffsetMs: number | null;
  fps: number | null;
  bitrateKbps: number | null;
  /** The video codec being received (`video/H264`, `video/VP8`), from getStats. */
  videoCodec: string | null;
  /** Audio bytes received so far, and the browser's total audio energy (null where it reports none). */
  audioBytes: number;
  audioEnergy: number | null;
  firstFrameMs: number | null;
  offerToFirstFrameMs: number | null;
  controls: Record<string, ControlState>;
  /** Milestones of the first session, ms since the page started loading. */
  timeline: Record<string, number>;
  errors: { code: string; message: string; at: number }[];
  log: string[];
}

declare global {
  interface Window {
    campeer: Exposed;
  }
}

const CONNECT_DEADLINE_MS = 20_000;
const DISCONNECTED_GRACE_MS = 5_000;
const STALL_KEYFRAME_MS = 3_000;
const STALL_RESTART_MS = 8_000;
const PING_EVERY_MS = 2_000;
/** Extra pings when the control channel opens, this far apart (ms). */
const CLOCK_WARMUP_PINGS = 5;
const CLOCK_WARMUP_GAP_MS = 200;
const STATS_EVERY_MS = 1_000;
const LATENCY_WINDOW = 30;
/** ICE servers from ice.json are fetched again for a session after this long (TURN credentials may expire). */
const ICE_FRESH_MS = 5 * 60_000;
/** How long the page waits for the device's answer to an `ice_request`. */
const ICE_WAIT_MS = 3_000;
/** Where a hosted page keeps its camera and broker (remote.ts). */
const TARGET_STORAGE = "campeer.remote";
/** At most one log line about unverified messages per this long. */
const UNVERIFIED_LOG_EVERY_MS = 5_000;

class Viewer {
  private readonly ui = new Ui();
  private readonly st: Exposed = {
    state: "loading",
    mqtt: "connecting",
    brokerUrl: null,
    device: null,
    auth: "signed",
    keyId: null,
    keyRefused: null,
    role: null,
    unverified: 0,
    iceSource: null,
    iceExpires: null,
    remote: null,
    claimLink: null,
    sid: null,
    sessions: 0,
    relay: null,
    relays: 0,
    videoWidth: 0,
    videoHeight: 0,
    framesSeen: 0,
    sessionFrames: 0,
    lastStamp: null,
    stampsRead: 0,
    framesMissed: 0,
    latencyMs: null,
    latencySamples: [],
    latencyStages: new LatencyWindows().all(),
    rttMs: null,
    pingRttMs: null,
    clockOffsetMs: null,
    fps: null,
    bitrateKbps: null,
    videoCodec: null,
    audioBytes: 0,
    audioEnergy: null,
    firstFrameMs: null,
    offerToFirstFrameMs: null,
    controls: {},
    timeline: {},
    errors: [],
    log: [],
  };

  private cfg!: PageConfig;
  private topics!: Topics;
  private client: MqttClient | null = null;
  private failedConnects = 0;
  private session: Session | null = null;
  /** The watch through the device's relay, instead of a session. */
  private relay: JanusWatch | null = null;
  /** When the offer that the relay hand-over answered went out. */
  private relayOfferSentAt: number | null = null;
  private rpc: Rpc | null = null;
  private key: StoredKey | null = null;
  private ladder: RoleLadder | null = null;
  /** A key from the page's URL fragment, until config.json says which device it is for. */
  private fragmentKey: AccessKey | null = null;
  /** The device's latest offer nonce (from its status). */
  private nonce: string | null = null;
  private iceServers: RTCIceServer[] | null = null;
  private iceFreshUntil = 0;
  /** Unix s when the servers were got, and when they expire (0: never), for servers from the device's reply. */
  private iceGotAt = 0;
  private iceExpiry: number | null = null;
  /** The camera and broker from a hosted page's link (or kept from one). */
  private remote: RemoteTarget | null = null;
  /** An `ice_request` waiting for its answer on this topic. */
  private sideWait: { topic: string; resolve: (a: IceAnswer | null) => void } | null = null;
  /** Bumped whenever the key changes: answers to requests made with an older key are dropped. */
  private keyGeneration = 0;
  private iceLoading = -1;
  private lastUnverifiedLog = -Infinity;
  private mqttRetry: ReturnType<typeof setTimeout> | null = null;
  /** Set when retrying cannot help until the user acts. */
  private halted: "unauthorized" | "unsupported" | "replaced" | null = null;
  private attempt = 0;
  private restartTimer: ReturnType<typeof setTimeout> | null = null;
  private connectTimer: ReturnType<typeof setTimeout> | null = null;
  private disconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly clock = new ClockMap();
  private readonly latencies = new LatencyWindows(LATENCY_WINDOW);
  /** Frames were added to `latencies` since they were last published. */
  private latencyFresh = false;
  private lastFrameAt = 0;
  private keyframeAsked = false;
  /** Frames in a row without a stamp: past a few, stamps are looked for less often. */
  private stampMisses = 0;
  private prevBytes: { at: number; bytes: number; frames: number } | null = null;
  private readonly canvas = document.createElement("canvas");
  private readonly ctx = this.canvas.getContext("2d", { willReadFrequently: true });

  constructor() {
    window.campeer = this.st;
  }

  async start(): Promise<void> {
    // Before anything else: take a pairing key out of the address bar, so
    // that it is neither bookmarked, shared nor kept in the history.
    this.takeFragmentKey();
    this.mark("script");
    this.ui.onUnmute = () => this.ui.toggleMute();
    this.ui.onReconnect = () => this.manualReconnect();
    this.ui.onPair = (text) => this.pairFromInput(text);
    this.ui.onClaim = () => void this.claim();
    this.ui.onForgetKey = () => this.forgetKey();
    this.ui.onToggle = (name) => void this.toggle(name);
    this.render();

    this.cfg = this.remote ? this.remoteCfg() : await this.loadConfig();
    this.mark("config");
    this.st.state = "broker";
    this.topics = new Topics(this.cfg.prefix, this.cfg.device_id);
    if (this.fragmentKey) {
      this.setKey({ ...this.fragmentKey, role: null });
      this.log(`paired with key "${this.fragmentKey.id}" from the link`, "ok");
      this.fragmentKey = null;
    } else {
      this.setKey(this.loadKey(), false);
    }
    if (this.remote) this.cfg = this.remoteCfg();
    this.st.auth = effectiveAuth(this.cfg.auth, undefined);
    this.ui.setDeviceName(this.cfg.device_id);
    document.title = `${this.cfg.device_id} · campeer`;
    if (this.remote && !brokerReachableFrom(window.location.protocol, this.remote.broker)) {
      this.st.mqtt = "off";
      this.error("broker", `this page is https: and the link's broker ${this.remote.broker} is plain ws: (the browser blocks it); ask for a link with a wss:// broker`);
    } else if (this.needsKeyForBroker() && !this.key) {
      this.st.mqtt = "off";
      this.log("not paired: the camera's broker admits paired browsers only");
    } else {
      this.connectBroker();
    }

    this.frameLoop();
    setInterval(() => void this.stats(), STATS_EVERY_MS);
    setInterval(() => void this.ping(), PING_EVERY_MS);
    window.addEventListener("pagehide", () => this.leave());
    // The daemon's policy decides whom the page may fetch from (a relay, say).
    document.addEventListener("securitypolicyviolation", (e) => {
      this.error("csp", `the page's security policy blocked ${e.blockedURI} (${e.effectiveDirective})`);
    });
    // A hidden tab presents no frames: that is not a stalled stream.
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.lastFrameAt = performance.now();
    });
    this.render();
  }

  // ---- configuration ------------------------------------------------------

  /**
   * The device's /config.json. A host without one (404: the page is hosted
   * off the device) uses the camera and broker kept from an earlier link.
   */
  private async loadConfig(): Promise<PageConfig> {
    for (let i = 0; ; i++) {
      try {
        const r = await fetch("config.json", { cache: "no-store" });
        if (r.status === 404) {
          const kept = this.loadTarget();
          if (kept) {
            this.useTarget(kept, false);
            return this.remoteCfg();
          }
          throw new Error("this page is not served by a camera and knows none yet: open a pairing link that names the device and the broker (docs/viewer.md)");
        }
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        const c = (await r.json()) as PageConfig;
        if (typeof c.device_id !== "string" || typeof c.prefix !== "string") throw new Error("config.json lacks device_id or prefix");
        return c;
      } catch (e) {
        this.error("config", `cannot load config.json: ${errText(e)}`);
        await sleep(Math.min(10_000, 500 * 2 ** i));
      }
    }
  }

  /**
   * Takes the key (and a hosted page's camera and broker) out of the
   * link's fragment; the key leaves the address bar at once.
   */
  private takeFragmentKey(): void {
    const hash = window.location.hash;
    const target = targetFromFragment(hash);
    if (target === "malformed") {
      this.ui.pairMessage("The link names its camera or broker badly (device=<id>&broker=<wss:// URL>): ask for a new one.", true);
    } else if (target) {
      this.useTarget(target, true);
    }
    if (pairValueOfFragment(hash) === null && fragmentToKeep(hash) === hash) return;
    if (pairValueOfFragment(hash) !== null) this.fragmentKey = keyFromFragment(hash);
    const { pathname, search } = window.location;
    try {
      history.replaceState(history.state, "", `${pathname}${search}${fragmentToKeep(hash)}`);
    } catch {
      window.location.hash = fragmentToKeep(hash);
    }
    if (pairValueOfFragment(hash) !== null && !this.fragmentKey) this.ui.pairMessage("The pairing link in the address was malformed: ask for a new one.", true);
  }

  /** Shows the camera of a hosted page's link (kept for later visits when `store`). */
  private useTarget(t: RemoteTarget, store: boolean): void {
    this.remote = t;
    this.st.remote = t;
    if (!store) return;
    try {
      localStorage.setItem(TARGET_STORAGE, storedTargetText(t));
    } catch {
      /* private mode: this visit only */
    }
  }

  private loadTarget(): RemoteTarget | null {
    try {
      return parseStoredTarget(localStorage.getItem(TARGET_STORAGE));
    } catch {
      return null;
    }
  }

  /** A hosted page's configuration: signed once it holds a key. */
  private remoteCfg(): PageConfig {
    return remoteConfig(this.remote!, this.key !== null || this.fragmentKey !== null);
  }

  private loadKey(): StoredKey | null {
    try {
      return parseStoredKey(localStorage.getItem(this.keyStorageName()));
    } catch {
      return null; // storage disabled
    }
  }

  /** Makes `k` the page's key (null: none), and stores it unless told not to. */
  private setKey(k: StoredKey | null, store = true): void {
    this.key = k;
    this.keyGeneration++;
    this.ladder = k ? new RoleLadder(k.role) : null;
    this.st.keyId = k?.id ?? null;
    this.st.keyRefused = null;
    if (!store) return;
    try {
      if (k) localStorage.setItem(this.keyStorageName(), storedKeyText(k));
      else localStorage.removeItem(this.keyStorageName());
    } catch {
      /* private mode: the key lasts for this page only */
    }
  }

  /** Whether this page must hold a key before it may talk to the broker at all. */
  private needsKeyForBroker(): boolean {
    return this.cfg.own_broker === true && this.st.auth === "signed";
  }

  /** The credentials for the device's own broker, and for ice.json. */
  private brokerLogin(): { username: string; password: string } | null {
    if (!this.key) return null;
    return { username: this.key.id, password: mqttPassword(this.key.secret, this.cfg.device_id) };
  }

  private keyStorageName(): string {
    return `campeer.key.${this.cfg.prefix}/${this.cfg.device_id}`;
  }

  // ---- MQTT ---------------------------------------------------------------

  private connectBroker(): void {
    this.clearMqttRetry();
    this.st.mqtt = "connecting";
    const raw = brokerUrl(this.cfg, window.location);
    let url = raw;
    let username: string | undefined;
    let password: string | undefined;
    try {
      const u = new URL(raw);
      if (u.username) {
        username = decodeURIComponent(u.username);
        password = decodeURIComponent(u.password);
        u.username = "";
        u.password = "";
        url = u.toString();
      }
    } catch {
      /* mqtt.js reports a bad URL itself */
    }
    // The device's own broker admits key holders only; an open device's
    // broker, anyone.
    const keyLogin = this.needsKeyForBroker();
    if (keyLogin) {
      const login = this.brokerLogin();
      if (!login) {
        this.st.mqtt = "off";
        return;
      }
      ({ username, password } = login);
    } else if (this.cfg.own_broker) {
      username = undefined;
      password = undefined;
    }
    this.st.brokerUrl = url;
    this.log(`broker ${url}`);
    const client = mqtt.connect(url, {
      clientId: `campeer-web-${Math.random().toString(36).slice(2, 12)}`,
      protocolVersion: 4,
      clean: true,
      keepalive: 20,
      reconnectPeriod: 1000,
      connectTimeout: 8000,
      resubscribe: false,
      // mqtt.js would otherwise run its timers in a Web Worker (so that a
      // hidden tab keeps exact keep-alives), which costs about 100 ms
      // before the first connect. A hidden tab whose keep-alive slips just
      // reconnects to the broker: the picture does not go through it.
      timerVariant: "native",
      username,
      password,
    });
    this.client = client;

    client.on("connect", () => {
      if (this.client !== client) return;
      this.failedConnects = 0;
      this.st.mqtt = "connected";
      this.mark("broker");
      this.log("broker connected", "ok");
      client.subscribe(this.topics.status, { qos: 1 });
      if (this.session) client.subscribe(this.session.topicOut, { qos: 1 });
      this.render();
    });
    client.on("close", () => {
      if (this.client !== client) return;
      if (this.st.mqtt === "connected") this.log("broker connection lost", "bad");
      this.st.mqtt = "disconnected";
      // Presence is unknown until the broker tells again; a running
      // session is left alone (the broker is not on the media path).
      this.st.device = null;
      this.render();
    });
    client.on("reconnect", () => {
      if (this.client !== client) return;
      this.failedConnects++;
      // The daemon may have come back with another broker address.
      if (this.failedConnects % 5 === 0) void this.recheckConfig();
    });
    client.on("error", (e) => {
      if (this.client !== client) return;
      this.error("mqtt", errText(e));
      // A refused CONNECT: mqtt.js does not retry by itself.
      const code = (e as { code?: unknown }).code;
      if (typeof code !== "number" || !/^Connection refused/.test(e.message)) return;
      this.client = null;
      client.end(true);
      if (code === 4 || code === 5) {
        // Bad user name or password / not authorized: retrying cannot help.
        this.st.mqtt = "refused";
        if (keyLogin) this.keyRefused("the camera's broker refused this key");
        else this.error("mqtt", "the broker refused the login in the broker URL");
        this.render();
        return;
      }
      this.st.mqtt = "disconnected";
      this.failedConnects++;
      const delay = Math.min(10_000, 1000 * 2 ** Math.min(this.failedConnects, 4)) * (0.8 + 0.4 * Math.random());
      this.mqttRetry = setTimeout(() => {
        this.mqttRetry = null;
        if (!this.client) this.connectBroker();
      }, delay);
      this.render();
    });
    client.on("message", (topic, payload) => {
      if (this.client === client) this.onMessage(topic, payload);
    });
  }

  private clearMqttRetry(): void {
    if (this.mqttRetry) clearTimeout(this.mqttRetry);
    this.mqttRetry = null;
  }

  private disconnectBroker(): void {
    this.clearMqttRetry();
    const old = this.client;
    this.client = null;
    old?.end(true);
    this.st.mqtt = "off";
    this.st.device = null;
  }

  private async recheckConfig(): Promise<void> {
    if (this.remote) return; // the link is the configuration
    try {
      const r = await fetch("config.json", { cache: "no-store" });
      if (!r.ok) return;
      const c = (await r.json()) as PageConfig;
      if (typeof c.device_id !== "string" || typeof c.prefix !== "string") return;
      if (c.device_id !== this.cfg.device_id || c.prefix !== this.cfg.prefix || c.auth !== this.cfg.auth || !!c.own_broker !== !!this.cfg.own_broker) {
        // Another device, or its access changed: start from scratch (the
        // key stays stored).
        this.log("the camera's configuration changed: reloading");
        window.location.reload();
        return;
      }
      if (!!c.claimable !== !!this.cfg.claimable) {
        this.cfg = { ...this.cfg, claimable: c.claimable };
        this.render();
      }
      if (brokerUrl(c, window.location) !== brokerUrl(this.cfg, window.location)) {
        this.log("broker address changed");
        this.cfg = c;
        const old = this.client;
        this.client = null;
        old?.end(true);
        this.connectBroker();
      }
    } catch {
      /* the daemon is still away */
    }
  }

  private readonly signaling: Signaling = {
    publish: async (topic, payload) => {
      // Never queued for later: a stale offer or bye reaching a restarted
      // device helps no one.
      if (!this.client?.connected) throw new Error("no broker connection");
      await this.client.publishAsync(topic, payload, { qos: 1 });
    },
    subscribe: async (topic) => {
      if (!this.client) throw new Error("no broker connection");
      await this.client.subscribeAsync(topic, { qos: 1 });
    },
    unsubscribe: (topic) => {
      if (this.client?.connected) this.client.unsubscribe(topic);
    },
  };

  private onMessage(topic: string, payload: Uint8Array): void {
    if (this.sideWait && topic === this.sideWait.topic) {
      const a = parseIceAnswer(payload);
      if (a) this.sideWait.resolve(a);
      return;
    }
    if (topic === this.topics.status) {
      const p = parsePresence(payload);
      if (p) this.onPresence(p);
      return;
    }
    const s = this.session;
    if (s && topic === s.topicOut) {
      const m = parseOut(payload);
      if (m) void s.handle(m);
    }
  }

  private onPresence(p: Presence): void {
    const was = this.st.device?.state;
    this.st.device = p;
    this.nonce = p.state === "online" && typeof p.nonce === "string" ? p.nonce : null;
    if ((p.auth === "signed" || p.auth === "open") && p.auth !== this.cfg.auth) {
      // The status disagrees with config.json: the device may have been
      // reconfigured (then config.json changed too), or someone else is
      // publishing on a shared broker (then only the stricter one counts).
      void this.recheckConfig();
    }
    const auth = effectiveAuth(this.cfg.auth, p.auth);
    if (auth !== this.st.auth) {
      this.log(`the camera is ${auth === "open" ? "open" : "signed"}`);
      this.st.auth = auth;
      if (this.active()) this.endSession(true);
      this.iceServers = null;
    }
    if (p.state === "offline") {
      if (was !== "offline") this.log("camera offline", "bad");
      if (this.active()) this.endSession(false);
      this.cancelRestart();
      this.render();
      return;
    }
    if (was !== "online") {
      this.mark("online");
      this.log(`camera online (${p.sessions ?? 0}/${p.max_sessions ?? "?"} viewers)`, "ok");
      this.attempt = 0;
      if (this.halted === "replaced") this.halted = null;
      // Back after an absence: if the running session shows no new frame
      // within a second, it died with the old process (a crash sends no
      // bye); start anew rather than wait for ICE to notice.
      const s = this.active();
      if (s && p.video) {
        const since = performance.now();
        setTimeout(() => {
          const visible = document.visibilityState === "visible";
          if (this.active() === s && this.lastFrameAt < since && visible) {
            this.log("camera is back but the picture stopped: new session");
            this.endSession(true);
            this.cancelRestart();
            this.ensureSession();
            this.render();
          }
        }, 1000);
      }
    }
    this.syncControlsFromPresence(p);
    this.ensureSession();
    this.render();
  }

  // ---- sessions -----------------------------------------------------------

  /** Starts a session if one should run and none does. */
  private ensureSession(): void {
    if (this.active() || this.restartTimer || this.halted) return;
    if (this.st.mqtt !== "connected" || this.st.device?.state !== "online") return;
    const signed = this.st.auth === "signed";
    if (signed && !this.key) {
      this.render();
      return;
    }
    // A signed offer needs the device's nonce; a v2 device's status always
    // has one (a status without it is from an older device).
    if (signed && !this.nonce) {
      this.render();
      return;
    }
    if (!this.iceFresh()) {
      void this.requestIce(); // calls back here when done
      return;
    }
    this.startSession();
  }

  private startSession(): void {
    const key = this.st.auth === "signed" ? this.key : null;
    const role: Role = key && this.ladder ? this.ladder.current : "control";
    const auth = key ? { key, role, nonce: () => this.nonce } : null;
    const s: Session = new Session(
      {
        topics: this.topics,
        deviceId: this.cfg.device_id,
        iceServers: this.iceServers ?? [],
        auth,
        wantVideo: !!this.st.device?.video,
        codec: forcedCodec(window.location.search),
      },
      this.signaling,
      {
        state: (state) => this.onSessionState(s, state),
        stream: (ms) => {
          if (this.session === s) this.ui.attach(ms);
        },
        rpc: (rpc) => {
          if (this.session === s) void this.onRpc(rpc);
        },
        notification: (m, params) => {
          if (this.session === s) this.onNotification(m, params);
        },
        ended: (why) => {
          if (this.session === s) this.onEnded(why, s);
        },
        unverified: (type) => {
          if (this.session === s) this.onUnverified(type);
        },
        notice: (code, message) => {
          if (this.session === s) this.log(`the camera refused a request (${code}: ${message}); the session goes on`, "bad");
        },
      },
    );
    this.session = s;
    this.st.role = role;
    this.st.sid = s.sid;
    this.st.sessions++;
    this.st.state = "signaling";
    this.resetFigures();
    this.log(`calling the camera (session ${s.sid.slice(0, 6)}…${key ? `, key "${key.id}" as ${role}` : ""})`);
    this.clearTimer("connectTimer");
    this.connectTimer = setTimeout(() => {
      if (this.session === s && s.state !== "connected") this.fail(`no connection within ${CONNECT_DEADLINE_MS / 1000} s`);
    }, CONNECT_DEADLINE_MS);
    s.start().catch((e) => {
      if (this.session === s) this.fail(`could not offer: ${errText(e)}`);
    });
    this.render();
  }

  /** Per-session figures start over with each session (or relay watch). */
  private resetFigures(): void {
    this.st.sessionFrames = 0;
    this.clock.reset();
    this.latencies.reset();
    this.latencyFresh = false;
    this.st.latencySamples = [];
    this.st.latencyStages = this.latencies.all();
    this.keyframeAsked = false;
    this.stampMisses = 0;
    this.st.lastStamp = null;
    this.prevBytes = null;
  }

  /** What the page watches through now: a session to the device, or its relay. */
  private active(): Session | JanusWatch | null {
    return this.session ?? this.relay;
  }

  private onSessionState(s: Session, state: SessionState): void {
    if (this.session !== s) return;
    if (state === "connecting") {
      this.mark("answer");
      if (s.subscribedAt !== null) this.mark("subscribed", s.subscribedAt);
      if (s.offerMadeAt !== null) this.mark("offer-made", s.offerMadeAt);
      if (s.offerSentAt !== null) this.mark("offer", s.offerSentAt);
      if (s.answerInAt !== null) this.mark("answer-in", s.answerInAt);
      this.st.state = "connecting";
      this.log(s.signed ? "verified answer received, connecting" : "answer received, connecting");
      this.roleAccepted();
    } else if (state === "connected") {
      this.mark("connected");
      this.clearTimer("connectTimer");
      this.clearTimer("disconnectTimer");
      if (this.st.state !== "playing") this.st.state = "connected";
      this.log("connected", "ok");
      if (!this.st.device?.video) this.attempt = 0;
    } else if (state === "disconnected") {
      this.log("connection interrupted", "bad");
      this.clearTimer("disconnectTimer");
      this.disconnectTimer = setTimeout(() => {
        if (this.session === s && s.state === "disconnected") this.fail("connection lost");
      }, DISCONNECTED_GRACE_MS);
    }
    this.render();
  }

  private onEnded(why: EndReason, s: Session): void {
    // A relay hand-over follows an offer the device accepted in every
    // respect (key, role): the role is the key's, as with an answer.
    if (why.kind === "relay") this.roleAccepted();
    this.dropSession();
    if (why.kind === "relay") {
      this.log(`the camera sends this viewer to its relay (${why.message || "busy"})`);
      this.startRelay(why.relay, s.offerSentAt);
    } else if (why.kind === "bye") {
      this.log(`the camera ended the session (${why.reason})`, why.reason === "shutdown" ? undefined : "bad");
      if (why.reason === "replaced") {
        this.halted = "replaced";
        this.st.state = "replaced";
      } else if (why.reason === "shutdown") {
        // It is going away: wait for it to say it is online again.
        if (this.st.device) this.st.device = { ...this.st.device, state: "offline" };
        this.st.state = "offline";
      } else {
        this.scheduleRestart();
      }
    } else if (why.kind === "error") {
      // An offer refusal on a signed device carries no mac: say so.
      this.error(why.code, `${why.message || why.code}${why.verified ? "" : " (unverified)"}`);
      if (why.code === "unauthorized") {
        this.onUnauthorized(why.verified);
      } else if (why.code === "unsupported") {
        this.halted = "unsupported";
        this.st.state = "unsupported";
      } else {
        this.scheduleRestart(why.code === "busy" ? 3000 : 0);
      }
    } else {
      this.error("failed", why.message);
      this.scheduleRestart();
    }
    this.render();
  }

  // ---- the relay ----------------------------------------------------------

  /** Watches through the device's relay, with the same video, figures and recovery as a session. */
  private startRelay(target: RelayTarget, offerSentAt: number | null): void {
    if (!reachableFrom(window.location.protocol, target.janus)) {
      this.error("relay", `the relay ${target.janus} is plain http: and this page is https: (the browser blocks it)`);
      this.scheduleRestart(3000);
      return;
    }
    const r: JanusWatch = new JanusWatch(
      target,
      { iceServers: this.iceServers ?? [] },
      {
        state: (state) => {
          if (this.relay === r) this.onRelayState(r, state);
        },
        stream: (ms) => {
          if (this.relay === r) this.ui.attach(ms);
        },
        log: (text, tone) => {
          if (this.relay === r) this.log(`relay: ${text}`, tone);
        },
        ended: (message) => {
          if (this.relay !== r) return;
          this.error("relay", message);
          this.dropSession();
          this.scheduleRestart();
          this.render();
        },
      },
    );
    this.relay = r;
    this.relayOfferSentAt = offerSentAt;
    this.st.relay = { janus: target.janus, mountpoint: target.mountpoint, state: r.state };
    this.st.relays++;
    this.st.state = "relay";
    // No data channel there: the switches' states would go stale.
    const unknown: Record<string, ControlState> = {};
    for (const [name, c] of Object.entries(this.st.controls)) unknown[name] = { direction: c.direction, value: null };
    this.st.controls = unknown;
    this.resetFigures();
    this.mark("relay");
    this.log(`watching through the relay ${hostOf(target.janus)} (mountpoint ${target.mountpoint}); no controls there`);
    this.clearTimer("connectTimer");
    this.connectTimer = setTimeout(() => {
      if (this.relay === r && r.state !== "connected") this.fail(`no connection to the relay within ${CONNECT_DEADLINE_MS / 1000} s`);
    }, CONNECT_DEADLINE_MS);
    void r.start();
    this.render();
  }

  private onRelayState(r: JanusWatch, state: RelayState): void {
    if (this.st.relay) this.st.relay.state = state;
    if (state === "connecting") {
      this.st.state = "connecting";
      this.log("relay: answered its offer, connecting");
    } else if (state === "connected") {
      this.mark("connected");
      this.clearTimer("connectTimer");
      this.clearTimer("disconnectTimer");
      if (this.st.state !== "playing") this.st.state = "connected";
      this.log("connected to the relay", "ok");
    } else if (state === "disconnected") {
      this.log("connection to the relay interrupted", "bad");
      this.clearTimer("disconnectTimer");
      this.disconnectTimer = setTimeout(() => {
        if (this.relay === r && r.state === "disconnected") this.fail("connection to the relay lost");
      }, DISCONNECTED_GRACE_MS);
    }
    this.render();
  }

  /** Gives up on the current session and tries again later. */
  private fail(message: string): void {
    this.error("failed", message);
    this.endSession(true);
    this.scheduleRestart();
    this.render();
  }

  /** Ends the session or the relay watch; `bye` tells the device (a relay is always told). */
  private endSession(bye: boolean): void {
    const s = this.session;
    const r = this.relay;
    if (!s && !r) return;
    s?.close(bye);
    r?.close();
    this.dropSession();
  }

  private dropSession(): void {
    this.session = null;
    this.relay = null;
    this.st.relay = null;
    this.rpc = null;
    this.st.sid = null;
    this.clearTimer("connectTimer");
    this.clearTimer("disconnectTimer");
    this.ui.detach();
    this.st.fps = null;
    this.st.bitrateKbps = null;
    this.st.rttMs = null;
    this.st.latencyMs = null;
    this.latencyFresh = false;
    if (this.st.state === "playing" || this.st.state === "connected") this.st.state = "reconnecting";
  }

  private scheduleRestart(minDelay = 0): void {
    if (this.restartTimer) return;
    const base = Math.min(10_000, 500 * 2 ** this.attempt);
    const delay = Math.max(minDelay, Math.round(base * (0.8 + 0.4 * Math.random())));
    this.attempt = Math.min(this.attempt + 1, 10);
    this.st.state = "reconnecting";
    this.ui.setRetryAt(performance.now() + delay);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      this.ensureSession();
      this.render();
    }, delay);
  }

  private cancelRestart(): void {
    this.clearTimer("restartTimer");
  }

  private manualReconnect(): void {
    this.log("reconnect requested");
    if (this.halted === "unauthorized" && this.key) {
      // One more try with the refused key, from its stored role.
      this.ladder = new RoleLadder(this.key.role);
      this.st.keyRefused = null;
      if (this.needsKeyForBroker() && !this.client) this.connectBroker();
    }
    this.halted = null;
    this.attempt = 0;
    this.cancelRestart();
    this.endSession(true);
    this.ensureSession();
    this.render();
  }

  /**
   * The device refused an offer `unauthorized` (`verified`: by a message
   * whose mac verified): another role, or the key is refused.
   */
  private onUnauthorized(verified: boolean): void {
    const role = this.st.role;
    if (this.st.auth !== "signed" || !this.key || !this.ladder) {
      // An open device (per config.json) that wants a key: its
      // configuration changed under the page.
      this.halted = "unauthorized";
      this.st.state = "unauthorized";
      void this.recheckConfig();
      return;
    }
    if (this.ladder.refused(verified) === "retry") {
      this.log(`the camera refused role ${role} for this key: trying ${this.ladder.current}`);
      this.ensureSession();
      return;
    }
    this.keyRefused("the camera refused every role for this key");
  }

  /**
   * A verified answer: the device accepted the key with the offered role,
   * which is kept for it when verified messages established it (see
   * RoleLadder); never a downgrade on an unverified refusal's word.
   */
  private roleAccepted(): void {
    if (!this.key || !this.ladder || !this.session?.signed) return;
    const offered = this.ladder.current;
    const role = this.ladder.accepted();
    if (role === null) {
      if (offered === "view") this.log("watching as view for now (the refusal of control was unverified, so it is not remembered)");
      return;
    }
    if (this.key.role !== role) {
      this.key = { ...this.key, role };
      try {
        localStorage.setItem(this.keyStorageName(), storedKeyText(this.key));
      } catch {
        /* not stored: the page asks the device again next time */
      }
      if (role === "view") this.log("this key may only watch: the switches are disabled");
    }
  }

  /** The device refused the key itself: stop everything that uses it, and ask for another. */
  private keyRefused(why: string): void {
    this.error("unauthorized", why);
    this.st.keyRefused = "This key was refused by the device (revoked or wrong).";
    this.halted = "unauthorized";
    this.st.state = "unauthorized";
    this.cancelRestart();
    this.endSession(true);
    if (this.needsKeyForBroker()) {
      this.disconnectBroker();
      this.st.mqtt = "refused";
    }
    this.render();
  }

  private pairFromInput(text: string): void {
    const k = parsePairingInput(text);
    if (!k) {
      this.ui.pairMessage("That is not a pairing link: it looks like http://…/#pair=id.secret, or id.secret.", true);
      return;
    }
    this.ui.clearPairInput();
    this.ui.pairMessage("", false);
    this.useKey(k);
  }

  /** Starts over with a new key (from the pairing field or a claim). */
  private useKey(k: AccessKey): void {
    this.endSession(true);
    this.setKey({ id: k.id, secret: k.secret, role: null });
    if (this.remote) {
      this.cfg = this.remoteCfg();
      this.st.auth = effectiveAuth(this.cfg.auth, this.st.device?.auth);
    }
    this.log(`paired with key "${k.id}"`, "ok");
    this.ui.keyStatus("", false);
    this.halted = null;
    this.attempt = 0;
    this.cancelRestart();
    this.iceServers = null;
    if (this.needsKeyForBroker() || !this.client) {
      // The broker login is the key's: log in again with the new one.
      this.disconnectBroker();
      this.connectBroker();
    }
    this.ensureSession();
    this.render();
  }

  private forgetKey(): void {
    this.endSession(true);
    this.setKey(null);
    this.halted = null;
    this.cancelRestart();
    this.iceServers = null;
    if (this.needsKeyForBroker()) this.disconnectBroker();
    this.log("key forgotten");
    this.ui.pairMessage("Key forgotten.", false);
    this.render();
  }

  // ---- claim and ICE servers ----------------------------------------------

  /** Claims an unclaimed device (its first-boot claim window): it answers with the first key. */
  private async claim(): Promise<void> {
    this.ui.setClaimBusy(true);
    try {
      const r = await fetch("claim", { method: "POST", headers: { "Content-Type": "application/json" }, body: "", cache: "no-store" });
      if (r.status === 409) {
        this.ui.pairMessage("This camera was already claimed: ask its owner for a pairing link.", true);
        this.cfg = { ...this.cfg, claimable: false };
        return;
      }
      if (r.status === 403 || r.status === 503) {
        // 403: not from the local network (or through a proxy the camera does not trust);
        // 503: the camera could not record the claim, so it handed out no key.
        const why = (await r.text()).trim().slice(0, 200);
        const lead = r.status === 503 ? "The camera could not record the claim; try again" : "This camera takes claims only from its local network";
        this.ui.pairMessage(`${lead} (${why})`, true);
        return;
      }
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const body = (await r.json()) as { pair?: unknown };
      const k = typeof body?.pair === "string" ? parsePairingInput(body.pair) : null;
      if (!k) throw new Error("the reply has no usable pairing key");
      this.cfg = { ...this.cfg, claimable: false };
      this.st.claimLink = pairingLink(window.location.href, k);
      this.ui.pairMessage("", false);
      this.log("claimed the camera", "ok");
      this.useKey(k);
    } catch (e) {
      this.ui.pairMessage(`The claim failed: ${errText(e)}`, true);
      this.error("claim", errText(e));
    } finally {
      this.ui.setClaimBusy(false);
      this.render();
    }
  }

  /** Whether the servers in hand may serve a new session. */
  private iceFresh(): boolean {
    if (this.iceServers === null) return false;
    if (performance.now() <= this.iceFreshUntil) return true;
    return this.iceExpiry !== null && iceUsable(this.iceExpiry, this.iceGotAt, unixNow());
  }

  /**
   * Takes servers for the next sessions: those of a device's reply
   * (`expires` in Unix s, 0: never) until shortly before they expire,
   * others (`expires` null) for `freshMs`.
   */
  private setIce(servers: RTCIceServer[], source: Exposed["iceSource"], expires: number | null, freshMs = ICE_FRESH_MS): void {
    this.iceServers = servers;
    this.st.iceSource = source;
    this.st.iceExpires = expires;
    this.iceExpiry = expires;
    this.iceGotAt = unixNow();
    // The session about to start takes them in any case.
    this.iceFreshUntil = performance.now() + (expires === null ? freshMs : 2_000);
  }

  /**
   * Asks the device for ICE servers (`ice_request`,
   * docs/protocol.md#ice-servers-for-viewers-ice_request, on a sid of its own), then starts the session. Servers are used
   * only from a reply that verifies; anything else is said in words and
   * the page goes on without them (a direct path may still work). An
   * older device's page (`bad_request`) asks its ice.json instead.
   */
  private async requestIce(): Promise<void> {
    const signed = this.st.auth === "signed";
    if (signed && (!this.key || !this.nonce)) return;
    const generation = this.keyGeneration;
    if (this.iceLoading === generation) return;
    this.iceLoading = generation;
    const sid = newSid();
    const req = iceRequest(this.cfg.device_id, sid, signed ? { key: this.key!, nonce: this.nonce! } : null);
    const fallback = this.remote ? [] : (this.cfg.ice_servers ?? []);
    const without = (why: string) => {
      this.error("ice", `${why}: going on without the camera's ICE servers`);
      this.setIce(fallback, fallback.length ? "config.json" : "none", null, 10_000);
    };
    try {
      const answer = await this.askOnSide(sid, req.json);
      if (this.keyGeneration !== generation) return;
      if (answer === null) {
        without(`no answer to the request for ICE servers within ${ICE_WAIT_MS / 1000} s`);
      } else if (answer.type === "error" && answer.code === "bad_request" && !this.remote) {
        this.log("the camera hands out no ICE servers over MQTT (an older version): asking its ice.json");
        await this.fetchIceJson(generation);
      } else if (answer.type === "error") {
        const older = answer.code === "bad_request" ? "; an older camera does not know the request" : "";
        without(`the camera refused the request for ICE servers (${answer.code}: ${answer.message || answer.code}${signed ? ", unverified" : ""}${older})`);
      } else {
        const opened = openIce(req.k, sid, answer);
        if (opened.ok) {
          const until = opened.expires ? `, valid until ${new Date(opened.expires * 1000).toLocaleTimeString()}` : "";
          this.log(`${opened.servers.length} ICE server(s) from the camera${signed ? ", verified" : ""}${until}`, "ok");
          this.setIce(opened.servers, "ice_request", opened.expires);
        } else {
          without(`the camera's reply with ICE servers was not used (${opened.why})`);
        }
      }
    } finally {
      if (this.iceLoading === generation) this.iceLoading = -1;
    }
    if (this.keyGeneration !== generation) return;
    this.ensureSession();
    this.render();
  }

  /** Publishes `json` on `sid`'s `in` topic and waits for the device's answer on its `out` topic (null: none in time). */
  private async askOnSide(sid: string, json: string): Promise<IceAnswer | null> {
    const topic = this.topics.out(sid);
    let resolve!: (a: IceAnswer | null) => void;
    const got = new Promise<IceAnswer | null>((r) => (resolve = r));
    const timer = setTimeout(() => resolve(null), ICE_WAIT_MS);
    this.sideWait = { topic, resolve };
    try {
      await this.signaling.subscribe(topic);
      await this.signaling.publish(this.topics.in(sid), json);
      return await got;
    } catch (e) {
      this.log(`could not ask for ICE servers: ${errText(e)}`, "bad");
      return null;
    } finally {
      clearTimeout(timer);
      if (this.sideWait?.topic === topic) this.sideWait = null;
      this.signaling.unsubscribe(topic);
    }
  }

  /**
   * An older device's `ice.json`, with the key on a signed device. A
   * device without one (404) or one that cannot be reached leaves
   * config.json's list; a refused key (401) stops the page.
   */
  private async fetchIceJson(generation: number): Promise<void> {
    const headers: Record<string, string> = {};
    const login = this.st.auth === "signed" ? this.brokerLogin() : null;
    if (login) headers.Authorization = `Bearer ${login.username}:${login.password}`;
    const fallback = this.cfg.ice_servers ?? [];
    try {
      const r = await fetch("ice.json", { cache: "no-store", headers });
      if (this.keyGeneration !== generation) return;
      if (r.status === 401 || r.status === 403) {
        this.keyRefused("the camera refused this key (ice.json)");
        return;
      }
      if (r.status === 404) {
        this.setIce(fallback, "config.json", null);
        return;
      }
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const servers = parseIceServers(await r.json());
      if (!servers) throw new Error("malformed reply");
      this.setIce(servers, "ice.json", null);
    } catch (e) {
      // The daemon may be restarting: use the fallback now, ask again next session.
      this.log(`ice.json: ${errText(e)}; using config.json's ICE servers`, "bad");
      this.setIce(fallback, "config.json", null, 10_000);
    }
  }

  private onUnverified(type: string): void {
    this.st.unverified++;
    const now = performance.now();
    if (now - this.lastUnverifiedLog >= UNVERIFIED_LOG_EVERY_MS) {
      this.lastUnverifiedLog = now;
      this.log(`ignored an unverified ${type} (${this.st.unverified} so far)`, "bad");
    }
    this.render();
  }

  private leave(): void {
    // The MQTT bye below does not get out before the page's WebSocket
    // closes; a beacon does (POST /bye/{sid}, the same message). Without
    // either, the device would stream to this closed page until ICE gives
    // up, holding one of its sessions.
    // A hosted page's own server is not the device's: no beacon there.
    const beacon = this.remote ? null : this.session?.byeBeacon();
    if (beacon && typeof navigator.sendBeacon === "function") {
      const url = new URL(`bye/${encodeURIComponent(beacon.sid)}`, window.location.href);
      navigator.sendBeacon(url, new Blob([beacon.json], { type: "application/json" }));
    }
    this.endSession(true);
    this.client?.end();
  }

  // ---- the control channel ------------------------------------------------

  private async onRpc(rpc: Rpc): Promise<void> {
    this.rpc = rpc;
    this.log("control channel open");
    // The clock map is as good as its fastest ping, and the first ones come
    // while the page is busy starting its video: a few more right away keep
    // the latency figure from starting off by several ms.
    void this.ping();
    for (let i = 1; i <= CLOCK_WARMUP_PINGS; i++) {
      setTimeout(() => {
        if (this.rpc === rpc) void this.ping();
      }, i * CLOCK_WARMUP_GAP_MS);
    }
    try {
      const info = await rpc.call<Presence>("device.info");
      if (info && typeof info === "object" && this.rpc === rpc) {
        this.st.device = { ...info, state: "online" };
        this.syncControlsFromPresence(info);
      }
      const list = await rpc.call<{ name: string; direction: "input" | "output"; value: boolean }[]>("gpio.list");
      if (Array.isArray(list) && this.rpc === rpc) {
        const next: Record<string, ControlState> = {};
        for (const c of list) if (typeof c?.name === "string") next[c.name] = { direction: c.direction, value: !!c.value };
        this.st.controls = next;
      }
    } catch (e) {
      this.error("rpc", errText(e));
    }
    this.render();
  }

  private syncControlsFromPresence(p: Presence): void {
    if (!Array.isArray(p.controls)) return;
    const next: Record<string, ControlState> = {};
    for (const c of p.controls) {
      if (typeof c?.name !== "string") continue;
      next[c.name] = { direction: c.direction, value: this.st.controls[c.name]?.value ?? null };
    }
    this.st.controls = next;
  }

  private onNotification(method: string, params: unknown): void {
    if (method !== "gpio.changed" || typeof params !== "object" || params === null) return;
    const { name, value } = params as { name?: unknown; value?: unknown };
    if (typeof name !== "string" || typeof value !== "boolean") return;
    const c = this.st.controls[name];
    this.st.controls = { ...this.st.controls, [name]: { direction: c?.direction ?? "output", value } };
    this.log(`${name} → ${value ? "on" : "off"}`);
    this.render();
  }

  private async toggle(name: string): Promise<void> {
    const rpc = this.rpc;
    if (!rpc) return;
    this.ui.setPending(name, true);
    try {
      const r = await rpc.call<{ name: string; value: boolean }>("gpio.toggle", { name });
      if (r && typeof r.value === "boolean" && this.st.controls[name]) {
        this.st.controls = { ...this.st.controls, [name]: { ...this.st.controls[name], value: r.value } };
      }
    } catch (e) {
      const msg = e instanceof RpcError && e.code === -32001 ? "this key may only watch (role view)" : errText(e);
      this.error("rpc", `${name}: ${msg}`);
    } finally {
      this.ui.setPending(name, false);
      this.render();
    }
  }

  private async ping(): Promise<void> {
    const rpc = this.rpc;
    if (!rpc) return;
    const sent = performance.now();
    try {
      const r = await rpc.call<{ now_us: number }>("ping");
      const got = performance.now();
      if (this.rpc !== rpc || typeof r?.now_us !== "number") return;
      const s = this.clock.add(sent, r.now_us, got);
      this.st.pingRttMs = s.rttMs;
      this.st.clockOffsetMs = this.clock.offsetMs;
    } catch {
      /* a lost ping is retried on the next tick */
    }
  }

  // ---- frames, stamps and figures -----------------------------------------

  private frameLoop(): void {
    const video = this.ui.video;
    type Meta = {
      width: number;
      height: number;
      expectedDisplayTime?: number;
      presentationTime?: number;
      receiveTime?: number;
    };
    type RvfcVideo = HTMLVideoElement & {
      requestVideoFrameCallback?: (cb: (now: number, meta: Meta) => void) => number;
    };
    const v = video as RvfcVideo;
    if (typeof v.requestVideoFrameCallback === "function") {
      const cb = (_now: number, meta: Meta) => {
        const times: FrameTimes = {
          received: meta.receiveTime,
          composed: meta.presentationTime,
          shown: performance.now(),
          expected: meta.expectedDisplayTime,
        };
        this.onFrame(times, meta.width, meta.height);
        v.requestVideoFrameCallback!(cb);
      };
      v.requestVideoFrameCallback(cb);
    } else {
      // Older browsers: watch the playback position change.
      let last = -1;
      const tick = () => {
        if (video.currentTime !== last && video.videoWidth > 0) {
          last = video.currentTime;
          this.onFrame({ shown: performance.now() }, video.videoWidth, video.videoHeight);
        }
        requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
    }
  }

  private onFrame(times: FrameTimes, width: number, height: number): void {
    if (!this.active()) return;
    this.st.framesSeen++;
    this.st.sessionFrames++;
    this.lastFrameAt = performance.now();
    this.keyframeAsked = false;
    this.st.videoWidth = width;
    this.st.videoHeight = height;
    if (this.st.firstFrameMs === null) {
      this.st.firstFrameMs = Math.round(performance.now());
      this.mark("frame");
      this.log(`first frame ${fmtMs(this.st.firstFrameMs)} after opening the page`, "ok");
    }
    if (this.st.sessionFrames === 1) {
      const sentAt = this.session ? this.session.offerSentAt : this.relayOfferSentAt;
      if (sentAt !== null) this.st.offerToFirstFrameMs = Math.round(performance.now() - sentAt);
      this.st.state = "playing";
      this.attempt = 0;
      this.ui.setAspect(width, height);
      this.log(`playing ${width}×${height}`, "ok");
      this.render();
    }
    // Reading the band costs a copy of the frame from the GPU on some
    // devices: without stamps (a camera without the overlay), look for them
    // only on every 30th frame.
    if (this.stampMisses > 30 && this.st.sessionFrames % 30 !== 0) return;
    const stamp = this.readStamp(width, height);
    if (!stamp) {
      this.stampMisses++;
      return;
    }
    this.stampMisses = 0;
    const prev = this.st.lastStamp;
    if (prev && stamp.counter > prev.counter + 1 && stamp.counter - prev.counter < 10_000) {
      this.st.framesMissed += stamp.counter - prev.counter - 1;
    }
    this.st.lastStamp = stamp;
    this.st.stampsRead++;
    if (this.latencies.add(stamp.ms, times, (at) => this.clock.deviceMs(at))) this.latencyFresh = true;
  }

  /** The exposed latency figures from the windows: once a second, with the other figures, not per frame. */
  private publishLatency(): void {
    if (!this.latencyFresh) return;
    this.latencyFresh = false;
    this.st.latencyStages = this.latencies.all();
    this.st.latencySamples = this.st.latencyStages.shown;
    const m = median(this.st.latencySamples);
    this.st.latencyMs = m === null ? null : Math.round(m);
  }

  private readStamp(width: number, height: number): Stamp | null {
    if (!this.ctx || width < 256 || height < 16) return null;
    if (this.canvas.width !== width) this.canvas.width = width;
    if (this.canvas.height !== 16) this.canvas.height = 16;
    try {
      this.ctx.drawImage(this.ui.video, 0, 0, width, 16, 0, 0, width, 16);
      const img = this.ctx.getImageData(0, 0, width, 16);
      return readStamp(img.data, width, 16);
    } catch {
      return null;
    }
  }

  private async stats(): Promise<void> {
    const s = this.active();
    this.watchdog();
    this.publishLatency();
    const pc = s?.peer;
    if (!s || !pc) {
      this.render();
      return;
    }
    let report: RTCStatsReport;
    try {
      report = await pc.getStats();
    } catch {
      return;
    }
    if (this.active() !== s) return;
    let bytes = 0;
    let frames = 0;
    let fps: number | null = null;
    let pairId: string | null = null;
    const pairs = new Map<string, { rtt?: number; nominated?: boolean; state?: string }>();
    let codecId: string | null = null;
    report.forEach((r) => {
      if (r.type === "inbound-rtp") {
        bytes += r.bytesReceived ?? 0;
        if (r.kind === "video") {
          frames = r.framesDecoded ?? 0;
          if (r.codecId) codecId = r.codecId;
          if (typeof r.framesPerSecond === "number") fps = r.framesPerSecond;
        } else if (r.kind === "audio") {
          this.st.audioBytes = r.bytesReceived ?? 0;
          if (typeof r.totalAudioEnergy === "number") this.st.audioEnergy = r.totalAudioEnergy;
        }
      } else if (r.type === "transport" && r.selectedCandidatePairId) {
        pairId = r.selectedCandidatePairId;
      } else if (r.type === "candidate-pair") {
        pairs.set(r.id, { rtt: r.currentRoundTripTime, nominated: r.nominated, state: r.state });
      }
    });
    const codec = codecId ? report.get(codecId) : undefined;
    if (codec?.mimeType) this.st.videoCodec = codec.mimeType;
    const now = performance.now();
    if (this.prevBytes) {
      const dt = (now - this.prevBytes.at) / 1000;
      if (dt > 0) {
        this.st.bitrateKbps = Math.round(((bytes - this.prevBytes.bytes) * 8) / dt / 1000);
        if (fps === null) fps = (frames - this.prevBytes.frames) / dt;
      }
    }
    this.prevBytes = { at: now, bytes, frames };
    this.st.fps = fps === null ? null : Math.round(fps * 10) / 10;
    let pair = pairId ? pairs.get(pairId) : undefined;
    if (!pair) for (const p of pairs.values()) if (p.nominated && p.state === "succeeded") pair = p;
    // ICE's own measure where it has one; on loopback it reads 0 (its
    // resolution is 1 ms), and the data-channel ping is the better figure.
    const rtt = pair?.rtt;
    const iceMs = typeof rtt === "number" && rtt > 0 ? rtt * 1000 : null;
    const best = iceMs ?? this.st.pingRttMs;
    this.st.rttMs = best === null ? null : Math.round(best * 10) / 10;
    this.render();
  }

  /** A session that stopped showing pictures gets a keyframe, then a new start. */
  private watchdog(): void {
    const s = this.active();
    if (!s || this.st.state !== "playing" || !this.st.device?.video || document.visibilityState !== "visible") return;
    const quiet = performance.now() - this.lastFrameAt;
    if (quiet > STALL_RESTART_MS) {
      this.fail(`no picture for ${Math.round(quiet / 1000)} s`);
    } else if (quiet > STALL_KEYFRAME_MS && !this.keyframeAsked && this.rpc) {
      this.keyframeAsked = true;
      this.log("picture stalled, asking for a keyframe", "bad");
      void this.rpc.call("video.keyframe").catch(() => {});
    }
  }

  // ---- bookkeeping --------------------------------------------------------

  private clearTimer(which: "restartTimer" | "connectTimer" | "disconnectTimer"): void {
    const t = this[which];
    if (t) clearTimeout(t);
    this[which] = null;
  }

  /** Records a milestone once (the first session's). */
  private mark(name: string, at = performance.now()): void {
    if (!(name in this.st.timeline)) this.st.timeline[name] = Math.round(at);
  }

  private log(text: string, tone?: "ok" | "bad"): void {
    this.st.log.push(text);
    if (this.st.log.length > 200) this.st.log.shift();
    this.ui.log(text, tone);
  }

  private error(code: string, message: string): void {
    this.st.errors.push({ code, message, at: Math.round(performance.now()) });
    if (this.st.errors.length > 100) this.st.errors.shift();
    this.log(`${code}: ${message}`, "bad");
  }

  private render(): void {
    const st = this.st;
    // Derived states that no event sets by itself.
    if (!this.active() && !this.restartTimer && !this.halted && st.state !== "loading") {
      if (st.auth === "signed" && !this.key) st.state = "need-key";
      else if (st.mqtt !== "connected") st.state = "broker";
      else if (st.device?.state !== "online") st.state = "offline";
      else if (st.auth === "signed" && !this.nonce) st.state = "no-nonce";
    }
    const signed = st.auth === "signed";
    this.ui.render({
      state: st.state,
      mqtt: st.mqtt,
      device: st.device,
      deviceId: this.cfg?.device_id ?? "",
      auth: st.auth,
      key: this.key ? { id: this.key.id, role: this.key.role } : null,
      keyRefused: st.keyRefused,
      needPairing: signed && this.cfg !== undefined && (!this.key || st.keyRefused !== null),
      claimable: this.cfg?.claimable === true,
      claimLink: st.claimLink,
      unverified: st.unverified,
      role: st.role,
      sid: st.sid,
      hasRpc: this.rpc !== null,
      relay: st.relay ? { host: hostOf(st.relay.janus), mountpoint: st.relay.mountpoint } : null,
      controls: st.controls,
      figures: {
        resolution: st.videoWidth && this.active() ? `${st.videoWidth}×${st.videoHeight}` : "–",
        fps: st.fps === null ? "–" : `${st.fps.toFixed(1)}`,
        bitrate: st.bitrateKbps === null ? "–" : fmtBitrate(st.bitrateKbps),
        rtt: st.rttMs === null ? "–" : fmtMs(st.rttMs),
        latency: st.latencyMs === null ? "–" : fmtMs(st.latencyMs),
        first: st.firstFrameMs === null ? "–" : fmtMs(st.firstFrameMs),
      },
      latencyDetail: st.latencyMs === null ? "" : describeStages(st.latencyStages),
    });
  }
}

/** The host (and port) of a URL, for the log and the page. */
function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

/** The wall clock in Unix seconds (what an `ice` reply's `expires` is in). */
function unixNow(): number {
  return Math.floor(Date.now() / 1000);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

const viewer = new Viewer();
void viewer.start();
