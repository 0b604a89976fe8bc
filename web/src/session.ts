// One viewing session: an RTCPeerConnection offered to the device over MQTT
// (PROTOCOL.md section 3), with trickle ICE both ways and the `control`
// data channel.

import {
  AccessKey,
  OutMessage,
  Topics,
  byeMessage,
  candidateMessage,
  newSid,
  offerMessage,
} from "./protocol";
import { Rpc } from "./rpc";

/** What a session needs from the MQTT connection. */
export interface Signaling {
  publish(topic: string, payload: string): Promise<void>;
  subscribe(topic: string): Promise<void>;
  unsubscribe(topic: string): void;
}

export type SessionState = "signaling" | "connecting" | "connected" | "disconnected" | "failed" | "closed";

export type EndReason =
  | { kind: "bye"; reason: string }
  | { kind: "error"; code: string; message: string }
  | { kind: "failed"; message: string };

export interface SessionEvents {
  state(s: SessionState): void;
  stream(s: MediaStream): void;
  rpc(rpc: Rpc): void;
  notification(method: string, params: unknown): void;
  /** The session is over (not called after close()). */
  ended(why: EndReason): void;
}

export interface SessionOptions {
  topics: Topics;
  deviceId: string;
  iceServers: RTCIceServer[];
  key: AccessKey | null;
}

export class Session {
  readonly sid = newSid();
  readonly startedAt = performance.now();
  subscribedAt: number | null = null;
  offerMadeAt: number | null = null;
  offerSentAt: number | null = null;
  answeredAt: number | null = null;
  state: SessionState = "signaling";

  private readonly pc: RTCPeerConnection;
  private readonly stream = new MediaStream();
  private remoteSet = false;
  private remoteQueue: (RTCIceCandidateInit | null)[] = [];
  private offerSent = false;
  private localQueue: (RTCIceCandidateInit | null)[] = [];
  private done = false;

  constructor(
    private readonly opts: SessionOptions,
    private readonly sig: Signaling,
    private readonly ev: SessionEvents,
  ) {
    this.pc = new RTCPeerConnection({ iceServers: opts.iceServers });
    this.pc.addTransceiver("video", { direction: "recvonly" });
    this.pc.addTransceiver("audio", { direction: "recvonly" });
    const dc = this.pc.createDataChannel("control", { ordered: true });
    dc.addEventListener("open", () => {
      if (!this.done) this.ev.rpc(new Rpc(dc, (m, p) => this.ev.notification(m, p)));
    });

    this.pc.addEventListener("icecandidate", (e) => {
      // An empty candidate string is Chrome's per-generation end marker; the
      // null candidate is the one end-of-candidates the protocol knows.
      if (e.candidate && !e.candidate.candidate) return;
      this.sendCandidate(e.candidate ? e.candidate.toJSON() : null);
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
    await this.sig.subscribe(this.topicOut);
    this.subscribedAt = performance.now();
    if (this.done) return;
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    this.offerMadeAt = performance.now();
    if (this.done) return;
    // The signature covers this exact text: send createOffer's SDP, which
    // is what was applied locally, with candidates following by trickle.
    const sdp = offer.sdp ?? "";
    await this.sig.publish(this.topicIn, offerMessage(sdp, this.opts.deviceId, this.sid, this.opts.key));
    this.offerSentAt = performance.now();
    this.offerSent = true;
    for (const c of this.localQueue.splice(0)) this.sendCandidate(c);
  }

  /** A message from this session's `out` topic. */
  async handle(msg: OutMessage): Promise<void> {
    if (this.done) return;
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
        this.answeredAt = performance.now();
        this.setState("connecting");
        for (const c of this.remoteQueue.splice(0)) await this.addRemote(c);
        return;
      case "candidate":
        if (this.remoteSet) await this.addRemote(msg.candidate);
        else if (this.remoteQueue.length < 64) this.remoteQueue.push(msg.candidate);
        return;
      case "bye":
        this.end({ kind: "bye", reason: msg.reason });
        return;
      case "error":
        this.end({ kind: "error", code: msg.code, message: msg.message });
        return;
    }
  }

  /** Ends the session from this side; tells the device when `bye` is set. */
  close(bye: boolean): void {
    if (this.done) return;
    this.done = true;
    if (bye) void this.sig.publish(this.topicIn, byeMessage()).catch(() => {});
    this.teardown();
  }

  private end(why: EndReason): void {
    if (this.done) return;
    this.done = true;
    this.teardown();
    this.ev.ended(why);
  }

  private teardown(): void {
    this.sig.unsubscribe(this.topicOut);
    for (const t of this.stream.getTracks()) t.stop();
    try {
      this.pc.close();
    } catch {
      /* already closed */
    }
    this.state = "closed";
  }

  private sendCandidate(c: RTCIceCandidateInit | null): void {
    if (this.done) return;
    if (!this.offerSent) {
      this.localQueue.push(c);
      return;
    }
    void this.sig.publish(this.topicIn, candidateMessage(c)).catch(() => {});
  }

  private async addRemote(c: RTCIceCandidateInit | null): Promise<void> {
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

export function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
