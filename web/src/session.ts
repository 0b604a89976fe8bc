// One viewing session: an RTCPeerConnection offered to the device over MQTT
// (docs/protocol.md#opening-a-session), with trickle ICE both ways and the `control`
// data channel. On a signed device the offer is signed over the device's
// nonce, and every later message is mac'd with the session key both ways
// (docs/protocol.md#authorization-protocol-version-2): the page acts only on device messages that verify.
// A `busy` refusal that hands the viewer to the device's relay (relay.ts)
// ends the session as `{kind: "relay"}`: the caller watches there instead.

import { AccessKey, Role, WireCandidate, judge, sessionKey } from "./auth";
import { OutMessage, Topics, byeMessage, candidateMessage, newSid, offerMessage } from "./protocol";
import { Rpc } from "./rpc";
import { canReceiveCameraVideo, NO_CODEC_TEXT, onlyCodec, type ForcedCodec } from "./codecs";
import { RelayTarget, readRelay } from "./relay";

/** What a session needs from the MQTT connection. */
export interface Signaling {
  publish(topic: string, payload: string): Promise<void>;
  subscribe(topic: string): Promise<void>;
  unsubscribe(topic: string): void;
}

export type SessionState = "signaling" | "connecting" | "connected" | "disconnected" | "failed" | "closed";

export type EndReason =
  | { kind: "bye"; reason: string }
  /** `verified`: false for an error without a valid mac (an offer refusal on a signed device). */
  | { kind: "error"; code: string; message: string; verified: boolean }
  | { kind: "failed"; message: string }
  /**
   * The device refused the offer `busy` and handed this viewer to its relay
   * (a relay object that passed every check): watch there instead.
   */
  | { kind: "relay"; relay: RelayTarget; message: string };

/**
 * How long an unverified `error` waits before it ends an attempt that has no
 * verified answer yet: a forged refusal racing the device's real answer
 * loses to it.
 */
const UNVERIFIED_ERROR_GRACE_MS = 1500;

export interface SessionEvents {
  state(s: SessionState): void;
  stream(s: MediaStream): void;
  rpc(rpc: Rpc): void;
  notification(method: string, params: unknown): void;
  /** The session is over (not called after close()). */
  ended(why: EndReason): void;
  /** A device message that failed its mac check was ignored. */
  unverified(type: string): void;
  /** A verified error on a live session (e.g. a refused renegotiation), which leaves it as it was. */
  notice(code: string, message: string): void;
}

/** How a session on a signed device signs: the key, its role, and the device's latest nonce. */
export interface SessionAuth {
  key: AccessKey;
  role: Role;
  nonce: () => string | null;
}

export interface SessionOptions {
  topics: Topics;
  deviceId: string;
  iceServers: RTCIceServer[];
  /** null on an open device: no signature, no macs. */
  auth: SessionAuth | null;
  /** The device sends video: an offer that cannot take it is not sent. */
  wantVideo?: boolean;
  /** Offer only this video codec (the page's `?codec=` parameter). */
  codec?: ForcedCodec | null;
}

export class Session {
  readonly sid = newSid();
  readonly startedAt = performance.now();
  subscribedAt: number | null = null;
  offerMadeAt: number | null = null;
  offerSentAt: number | null = null;
  /** When the answer message arrived, before it was checked and applied. */
  answerInAt: number | null = null;
  answeredAt: number | null = null;
  state: SessionState = "signaling";

  private readonly pc: RTCPeerConnection;
  private readonly stream = new MediaStream();
  private readonly video: RTCRtpTransceiver;
  private remoteSet = false;
  private remoteQueue: (WireCandidate | null)[] = [];
  private offerSent = false;
  private localQueue: (WireCandidate | null)[] = [];
  private done = false;
  /** The session key, once the signed offer exists; null on an open device. */
  private k: Uint8Array | null = null;
  private pendingError: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly opts: SessionOptions,
    private readonly sig: Signaling,
    private readonly ev: SessionEvents,
  ) {
    this.pc = new RTCPeerConnection({ iceServers: opts.iceServers });
    const video = this.pc.addTransceiver("video", { direction: "recvonly" });
    this.video = video;
    if (opts.codec) {
      const caps = RTCRtpReceiver.getCapabilities("video")?.codecs ?? [];
      const keep = onlyCodec(caps, opts.codec);
      // A browser without that codec keeps its own list (and the check
      // before offering says what it lacks).
      if (keep.length > 0) video.setCodecPreferences(keep);
    }
    this.pc.addTransceiver("audio", { direction: "recvonly" });
    const dc = this.pc.createDataChannel("control", { ordered: true });
    dc.addEventListener("open", () => {
      if (!this.done) this.ev.rpc(new Rpc(dc, (m, p) => this.ev.notification(m, p)));
    });

    this.pc.addEventListener("icecandidate", (e) => {
      // An empty candidate string is Chrome's per-generation end marker; the
      // null candidate is the one end-of-candidates the protocol knows.
      if (e.candidate && !e.candidate.candidate) return;
      this.sendCandidate(e.candidate ? toWire(e.candidate.toJSON()) : null);
    });
    this.pc.addEventListener("track", (e) => {
      if (!this.stream.getTracks().includes(e.track)) this.stream.addTrack(e.track);
      this.ev.stream(this.stream);
    });
    this.pc.addEventListener("connectionstatechange", () => this.onConnectionState());
  }

  get topicIn(): string {
    return this.opts.topics.in(this.sid);
  }

  get topicOut(): string {
    return this.opts.topics.out(this.sid);
  }

  /** The peer connection, for getStats(). */
  get peer(): RTCPeerConnection {
    return this.pc;
  }

  /** Subscribes to the answer topic, then offers. */
  async start(): Promise<void> {
    // The video receiver's track exists before any answer: showing it now
    // lets the browser set up its player while the offer and answer
    // travel, instead of between the answer and the first frame (tens of
    // milliseconds of the page's main thread in headless Chromium). Audio
    // still comes with its `track` event, only when the device sends it.
    const track = this.opts.wantVideo ? this.video.receiver?.track : undefined;
    if (track) {
      this.stream.addTrack(track);
      this.ev.stream(this.stream);
    }
    await this.sig.subscribe(this.topicOut);
    this.subscribedAt = performance.now();
    if (this.done) return;
    const offer = await this.pc.createOffer();
    if (this.opts.wantVideo && !canReceiveCameraVideo(offer.sdp ?? "")) {
      // Calling would only connect without a picture, and calling again
      // would not change the browser: say why, once.
      this.end({ kind: "error", code: "unsupported", message: NO_CODEC_TEXT, verified: true });
      return;
    }
    await this.pc.setLocalDescription(offer);
    this.offerMadeAt = performance.now();
    if (this.done) return;
    // The signature covers this exact text: send createOffer's SDP, which
    // is what was applied locally, with candidates following by trickle.
    const sdp = offer.sdp ?? "";
    const a = this.opts.auth;
    let signing = null;
    if (a) {
      // The latest nonce the device announced: it accepts its current and
      // its previous one.
      const nonce = a.nonce();
      if (!nonce) throw new Error("the device has not announced a nonce");
      signing = { key: a.key, role: a.role, nonce };
    }
    const { json, sig } = offerMessage(sdp, this.opts.deviceId, this.sid, signing);
    if (a && sig) this.k = sessionKey(a.key.secret, sig);
    // Timed from the hand-over to the MQTT client, not its PUBACK (QoS 1),
    // which comes only after the broker has passed the offer on.
    const published = this.sig.publish(this.topicIn, json);
    this.offerSentAt = performance.now();
    await published;
    this.offerSent = true;
    for (const c of this.localQueue.splice(0)) this.sendCandidate(c);
  }

  /** Whether the session is signed (its device is not open). */
  get signed(): boolean {
    return this.opts.auth !== null;
  }

  /** A message from this session's `out` topic. */
  async handle(msg: OutMessage): Promise<void> {
    if (this.done) return;
    if (msg.type === "answer" && this.answerInAt === null) this.answerInAt = performance.now();
    const verdict = judge(msg, { signed: this.signed, k: this.k, answered: this.remoteSet });
    if (verdict === "ignore") {
      this.ev.unverified(msg.type);
      return;
    }
    if (verdict === "unverified-error") {
      if (msg.type !== "error") return;
      // A relay without the outer mac still counts when its own mac (under
      // the same session key) verifies; one with a wrong outer mac does not.
      if (msg.mac === null && this.followRelay(msg, false)) return;
      if (this.pendingError) return;
      const { code, message } = msg;
      this.pendingError = setTimeout(() => {
        this.pendingError = null;
        if (!this.remoteSet) this.end({ kind: "error", code, message, verified: false });
      }, UNVERIFIED_ERROR_GRACE_MS);
      return;
    }
    switch (msg.type) {
      case "answer":
        if (this.remoteSet) return; // the same answer again (QoS 1 may repeat)
        try {
          await this.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
        } catch (e) {
          this.end({ kind: "failed", message: `the device's answer was refused: ${errText(e)}` });
          return;
        }
        this.remoteSet = true;
        this.clearPendingError();
        this.answeredAt = performance.now();
        this.setState("connecting");
        for (const c of this.remoteQueue.splice(0)) await this.addRemote(c);
        return;
      case "candidate":
        if (this.remoteSet) await this.addRemote(msg.candidate);
        else if (this.remoteQueue.length < 64) this.remoteQueue.push(msg.candidate);
        return;
      case "bye":
        this.end({ kind: "bye", reason: msg.reason ?? "closed" });
        return;
      case "error":
        // A verified error on a session that has its answer refuses a
        // renegotiation, which leaves the session as it was (this page
        // does not renegotiate, but says so if it ever happens).
        if (this.remoteSet && this.signed) this.ev.notice(msg.code, msg.message);
        else if (!this.followRelay(msg, true)) this.end({ kind: "error", code: msg.code, message: msg.message, verified: this.signed });
        return;
    }
  }

  /**
   * A `busy` with a relay, before any answer: ends the session with the
   * relay when it checks out. `verified`: the outer mac verified (or the
   * session is open). A relay that does not check out ends the session as
   * an ordinary error when `verified`, with the reason; otherwise it is
   * left to the caller.
   */
  private followRelay(msg: Extract<OutMessage, { type: "error" }>, verified: boolean): boolean {
    if (msg.relay === undefined || msg.code !== "busy" || this.remoteSet) return false;
    const r = readRelay(msg.relay, { sid: this.sid, signed: this.signed, k: this.k });
    if (r.ok) {
      this.end({ kind: "relay", relay: r.relay, message: msg.message });
      return true;
    }
    if (!verified) return false;
    this.end({ kind: "error", code: msg.code, message: `${msg.message || msg.code} (its relay was refused: ${r.why})`, verified: this.signed });
    return true;
  }

  /**
   * The `bye` this session would publish, for a page going away to send by
   * `navigator.sendBeacon` as well (its MQTT message does not get out
   * before the page's WebSocket closes). Null before the offer is out or
   * once the session has ended.
   */
  byeBeacon(): { sid: string; json: string } | null {
    if (this.done || !this.offerSent) return null;
    return { sid: this.sid, json: byeMessage(this.k) };
  }

  /** Ends the session from this side; tells the device when `bye` is set. */
  close(bye: boolean): void {
    if (this.done) return;
    this.done = true;
    // No offer out, no session at the device: nothing to end there.
    if (bye && this.offerSent) void this.sig.publish(this.topicIn, byeMessage(this.k)).catch(() => {});
    this.teardown();
  }

  private end(why: EndReason): void {
    if (this.done) return;
    this.done = true;
    this.teardown();
    this.ev.ended(why);
  }

  private clearPendingError(): void {
    if (this.pendingError) clearTimeout(this.pendingError);
    this.pendingError = null;
  }

  private teardown(): void {
    this.clearPendingError();
    this.sig.unsubscribe(this.topicOut);
    for (const t of this.stream.getTracks()) t.stop();
    try {
      this.pc.close();
    } catch {
      /* already closed */
    }
    this.state = "closed";
  }

  private sendCandidate(c: WireCandidate | null): void {
    if (this.done) return;
    if (!this.offerSent) {
      this.localQueue.push(c);
      return;
    }
    void this.sig.publish(this.topicIn, candidateMessage(c, this.k)).catch(() => {});
  }

  private async addRemote(c: WireCandidate | null): Promise<void> {
    try {
      if (c === null) await this.pc.addIceCandidate();
      else await this.pc.addIceCandidate(c);
    } catch {
      // A candidate the browser cannot use (another address family, say)
      // is not fatal: ICE goes on with the others.
    }
  }

  private onConnectionState(): void {
    if (this.done) return;
    const s = this.pc.connectionState;
    if (s === "connected") this.setState("connected");
    else if (s === "disconnected") this.setState("disconnected");
    else if (s === "failed") this.end({ kind: "failed", message: "ICE failed" });
    else if (s === "closed") this.end({ kind: "failed", message: "connection closed" });
  }

  private setState(s: SessionState): void {
    if (this.state === s) return;
    this.state = s;
    this.ev.state(s);
  }
}

/** A browser candidate as the protocol sends it (the text is required there). */
function toWire(c: RTCIceCandidateInit): WireCandidate {
  const w: WireCandidate = { candidate: c.candidate ?? "", sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null };
  if (c.usernameFragment) w.usernameFragment = c.usernameFragment;
  return w;
}

export function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
