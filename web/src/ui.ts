// The page's DOM: finds the elements of index.html once and redraws them
// from a plain description of the state. No framework.

import type { Role } from "./auth";
import { NO_CODEC_TEXT } from "./codecs";
import type { Presence } from "./protocol";

export type MqttState = "off" | "connecting" | "connected" | "disconnected" | "refused";

export interface View {
  state: string;
  mqtt: MqttState;
  device: Presence | null;
  deviceId: string;
  auth: "open" | "signed";
  /** The key this page holds for the device (id only), and the role the device last accepted. */
  key: { id: string; role: Role | null } | null;
  /** Why the key is no good, when the device refused it. */
  keyRefused: string | null;
  /** Show the pairing prompt. */
  needPairing: boolean;
  claimable: boolean;
  /** The pairing link to save after a claim. */
  claimLink: string | null;
  unverified: number;
  role: Role | null;
  sid: string | null;
  hasRpc: boolean;
  /** The relay the page watches through (no control channel there), null when direct. */
  relay: { host: string; mountpoint: number } | null;
  controls: Record<string, { direction: "input" | "output"; value: boolean | null }>;
  figures: Record<"resolution" | "fps" | "bitrate" | "rtt" | "latency" | "first", string>;
  /** The latency figure's stages in words (its tooltip); empty without figures. */
  latencyDetail: string;
}

function el<T extends HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`index.html lacks #${id}`);
  return e as T;
}

export function fmtMs(ms: number): string {
  if (ms >= 10_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms >= 100) return `${Math.round(ms)} ms`;
  return `${Math.round(ms * 10) / 10} ms`;
}

export function fmtBitrate(kbps: number): string {
  return kbps >= 1000 ? `${(kbps / 1000).toFixed(2)} Mb/s` : `${kbps} kb/s`;
}

const OVERLAY: Record<string, string> = {
  loading: "Loading…",
  broker: "Connecting to the broker…",
  offline: "Waiting for the camera to come online…",
  "need-key": "This camera shows its picture only to paired browsers: pair this one below.",
  "no-nonce": "The camera sends no nonce: it runs an older campeer than this page. Update it.",
  signaling: "Calling the camera…",
  relay: "The camera sends this viewer to its relay: connecting there…",
  connecting: "Connecting…",
  connected: "Connected, waiting for the picture…",
  reconnecting: "Reconnecting…",
  unauthorized: "This key was refused by the device (revoked or wrong).",
  unsupported: NO_CODEC_TEXT,
  replaced: "Another viewer took this session over. Press Reconnect.",
};

export class Ui {
  readonly video = el<HTMLVideoElement>("video");
  private readonly overlay = el<HTMLDivElement>("overlay");
  private readonly overlayText = el<HTMLParagraphElement>("overlay-text");
  private readonly spinner = el<HTMLDivElement>("spinner");
  private readonly unmute = el<HTMLButtonElement>("unmute");
  private readonly controlsList = el<HTMLUListElement>("controls");
  private readonly controlsEmpty = el<HTMLParagraphElement>("controls-empty");
  private readonly keyCard = el<HTMLElement>("card-key");
  private readonly keyInfo = el<HTMLParagraphElement>("key-info");
  private readonly keyStatusEl = el<HTMLParagraphElement>("key-status");
  private readonly pairCard = el<HTMLElement>("card-pair");
  private readonly pairStatus = el<HTMLParagraphElement>("pair-status");
  private readonly pairPrompt = el<HTMLDivElement>("pair-prompt");
  private readonly pairInput = el<HTMLInputElement>("pair-input");
  private readonly claimBox = el<HTMLDivElement>("claim-box");
  private readonly claimButton = el<HTMLButtonElement>("claim");
  private readonly claimNote = el<HTMLDivElement>("claim-note");
  private readonly claimLinkEl = el<HTMLInputElement>("claim-link");
  private readonly banner = el<HTMLDivElement>("open-banner");
  private readonly logList = el<HTMLOListElement>("log");
  private readonly pending = new Set<string>();
  private retryAt = 0;
  private hasAudio = false;
  private claimNoteDismissed = false;

  onUnmute: () => void = () => {};
  onReconnect: () => void = () => {};
  /** Text pasted into the pairing field. */
  onPair: (text: string) => void = () => {};
  onClaim: () => void = () => {};
  onForgetKey: () => void = () => {};
  onToggle: (name: string) => void = () => {};

  constructor() {
    this.unmute.addEventListener("click", () => this.onUnmute());
    el("reconnect").addEventListener("click", () => this.onReconnect());
    el("fullscreen").addEventListener("click", () => {
      const screen = this.video.parentElement;
      if (document.fullscreenElement) void document.exitFullscreen();
      else if (screen?.requestFullscreen) void screen.requestFullscreen().catch(() => {});
      else (this.video as HTMLVideoElement & { webkitEnterFullscreen?: () => void }).webkitEnterFullscreen?.();
    });
    el<HTMLFormElement>("pair-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const text = this.pairInput.value;
      if (text.trim()) this.onPair(text);
    });
    this.claimButton.addEventListener("click", () => this.onClaim());
    el("claim-copy").addEventListener("click", () => void this.copyClaimLink());
    el("claim-done").addEventListener("click", () => {
      this.claimNoteDismissed = true;
      this.claimNote.hidden = true;
    });
    el("key-forget").addEventListener("click", () => this.onForgetKey());
    this.controlsList.addEventListener("click", (e) => {
      const b = (e.target as HTMLElement).closest("button[data-control]");
      if (b instanceof HTMLButtonElement && !b.disabled) this.onToggle(b.dataset.control ?? "");
    });
    this.video.addEventListener("volumechange", () => this.syncMute());
  }

  setDeviceName(name: string): void {
    el("device-name").textContent = name;
  }

  /** Shows a session's stream. */
  attach(stream: MediaStream): void {
    if (this.video.srcObject !== stream) this.video.srcObject = stream;
    this.hasAudio = stream.getAudioTracks().length > 0;
    void this.video.play().catch(() => {
      /* autoplay is allowed muted; a refusal shows as no frames */
    });
  }

  detach(): void {
    this.video.srcObject = null;
    this.hasAudio = false;
  }

  /** Fits the picture's box to the camera's aspect ratio. */
  setAspect(width: number, height: number): void {
    const screen = this.video.parentElement;
    if (screen && width > 0 && height > 0) screen.style.aspectRatio = `${width} / ${height}`;
  }

  toggleMute(): void {
    this.video.muted = !this.video.muted;
    if (!this.video.muted) void this.video.play().catch(() => {});
    this.syncMute();
  }

  private syncMute(): void {
    this.unmute.textContent = this.video.muted ? "Unmute" : "Mute";
  }

  setRetryAt(at: number): void {
    this.retryAt = at;
  }

  setPending(name: string, on: boolean): void {
    if (on) this.pending.add(name);
    else this.pending.delete(name);
  }

  keyStatus(text: string, bad: boolean): void {
    this.keyStatusEl.textContent = text;
    this.keyStatusEl.dataset.tone = bad ? "bad" : "";
  }

  /** A line under the pairing field (a malformed link, a claim's outcome). */
  pairMessage(text: string, bad: boolean): void {
    this.pairStatus.textContent = text;
    this.pairStatus.dataset.tone = bad ? "bad" : "";
  }

  clearPairInput(): void {
    this.pairInput.value = "";
  }

  setClaimBusy(busy: boolean): void {
    this.claimButton.disabled = busy;
  }

  private async copyClaimLink(): Promise<void> {
    const text = this.claimLinkEl.value;
    const button = el<HTMLButtonElement>("claim-copy");
    let ok = false;
    try {
      // The Clipboard API exists only on secure pages (https:, localhost).
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
        ok = true;
      }
    } catch {
      /* fall back below */
    }
    if (!ok) {
      this.claimLinkEl.focus();
      this.claimLinkEl.select();
      try {
        ok = document.execCommand("copy");
      } catch {
        ok = false;
      }
    }
    button.textContent = ok ? "Copied" : "Select and copy it";
    setTimeout(() => (button.textContent = "Copy"), 2000);
  }

  log(text: string, tone?: "ok" | "bad"): void {
    const li = document.createElement("li");
    const t = document.createElement("time");
    t.textContent = new Date().toLocaleTimeString([], { hour12: false });
    li.append(t, text);
    li.title = text;
    if (tone) li.dataset.tone = tone;
    this.logList.prepend(li);
    while (this.logList.children.length > 40) this.logList.lastElementChild?.remove();
  }

  render(v: View): void {
    const mqttText = v.mqtt === "off" ? "needs key" : v.mqtt === "refused" ? "key refused" : v.mqtt;
    const mqttLevel = v.mqtt === "connected" ? "ok" : v.mqtt === "connecting" ? "wait" : v.mqtt === "off" ? "idle" : "bad";
    this.pill("pill-broker", mqttLevel, mqttText);
    const dev = v.device?.state;
    this.pill("pill-device", dev === "online" ? "ok" : dev === "offline" ? "bad" : "wait", dev ?? "unknown");
    const sLevel =
      v.state === "playing" || v.state === "connected"
        ? "ok"
        : v.state === "unauthorized" || v.state === "unsupported"
          ? "bad"
          : ["signaling", "relay", "connecting", "reconnecting"].includes(v.state)
            ? "wait"
            : "idle";
    const sText = v.state === "need-key" ? "not paired" : v.state === "unauthorized" ? "key refused" : v.state;
    this.pill("pill-session", sLevel, v.relay && v.state !== "relay" ? `${sText} via relay` : sText);

    // Overlay over the picture.
    const playing = v.state === "playing";
    let text = OVERLAY[v.state] ?? v.state;
    if (v.state === "reconnecting" && this.retryAt > performance.now()) {
      text = `Reconnecting in ${Math.ceil((this.retryAt - performance.now()) / 1000)} s…`;
    }
    if (v.state === "connected" && v.device && !v.device.video) text = "This camera has no video source.";
    if (v.relay && v.state === "connecting") text = "Connecting to the relay…";
    if (v.relay && v.state === "connected") text = "Connected to the relay, waiting for the picture…";
    this.overlay.hidden = playing;
    this.overlayText.textContent = text;
    const bad = ["unauthorized", "unsupported", "no-nonce"].includes(v.state);
    this.overlay.dataset.tone = bad ? "bad" : "";
    this.spinner.hidden = bad || ["need-key", "no-nonce", "replaced", "offline"].includes(v.state);

    for (const [k, val] of Object.entries(v.figures)) el(`fig-${k}`).textContent = val;
    el("fig-latency").title = v.latencyDetail;
    // A device without a microphone still gets an (empty) audio track.
    this.unmute.disabled = !this.hasAudio || !v.device?.audio;

    // The open-device warning: plain and always visible.
    this.banner.hidden = v.auth !== "open";

    // Pairing, claim and the key.
    const signed = v.auth === "signed";
    const showNote = v.claimLink !== null && !this.claimNoteDismissed;
    this.pairCard.hidden = !(signed && (v.needPairing || showNote));
    this.pairPrompt.hidden = !v.needPairing;
    el("pair-title").textContent = v.needPairing ? "Pair this browser" : "Your pairing link";
    this.claimBox.hidden = !(v.needPairing && v.claimable);
    this.claimNote.hidden = !showNote;
    if (v.claimLink !== null && this.claimLinkEl.value !== v.claimLink) this.claimLinkEl.value = v.claimLink;
    if (v.needPairing && v.keyRefused) this.pairMessage(`${v.keyRefused} Pair again:`, true);
    this.keyCard.hidden = !(signed && v.key);
    if (v.key) {
      const role = v.key.role ? ` · role ${v.key.role}` : "";
      this.keyInfo.textContent = `Paired with key "${v.key.id}"${role}`;
    }
    const unverified = el("unverified");
    unverified.hidden = v.unverified === 0;
    unverified.textContent = `Ignored ${v.unverified} unverified message${v.unverified === 1 ? "" : "s"} from the broker.`;

    this.renderControls(v);

    const info = el("session-info");
    info.textContent = v.relay
      ? `watching through the relay ${v.relay.host} · mountpoint ${v.relay.mountpoint}`
      : v.sid
        ? `session ${v.sid.slice(0, 8)}… · ${v.role ?? ""}`
        : "";

    const d = v.device;
    const parts: string[] = [];
    if (d?.version) parts.push(`campeer ${d.version}`);
    if (d?.video) parts.push(`${d.video.codec} ${d.video.width}×${d.video.height} @ ${d.video.fps} fps`);
    if (d?.audio) parts.push(`${d.audio.codec} ${d.audio.rate / 1000} kHz`);
    else if (d && d.audio === null) parts.push("no microphone");
    if (d?.sessions !== undefined) parts.push(`${d.sessions}/${d.max_sessions ?? "?"} viewers`);
    parts.push(v.auth === "signed" ? "paired access" : "open access");
    el("footer").textContent = parts.join(" · ");
  }

  private renderControls(v: View): void {
    const names = Object.keys(v.controls).sort();
    this.controlsEmpty.hidden = names.length > 0;
    // Rebuild only when the set of controls changes; update in place otherwise.
    const have = Array.from(this.controlsList.children).map((li) => (li as HTMLElement).dataset.name);
    if (have.join("\n") !== names.join("\n")) {
      this.controlsList.replaceChildren(
        ...names.map((name) => {
          const li = document.createElement("li");
          li.className = "control";
          li.dataset.name = name;
          const lamp = document.createElement("span");
          lamp.className = "lamp";
          lamp.dataset.indicator = name;
          const label = document.createElement("span");
          label.className = "cname";
          label.textContent = name;
          const dir = document.createElement("span");
          dir.className = "cdir";
          li.append(lamp, label, dir);
          if (v.controls[name].direction === "output") {
            const b = document.createElement("button");
            b.type = "button";
            b.className = "switch";
            b.dataset.control = name;
            li.append(b);
          }
          return li;
        }),
      );
    }
    const canControl = v.hasRpc && v.role !== "view";
    const outputs = names.some((n) => v.controls[n].direction === "output");
    // Over the relay there is no data channel: no switching, and the lamps
    // do not follow.
    el("controls-relay").hidden = !(v.relay && names.length > 0);
    el("controls-view-only").hidden = !(v.role === "view" && outputs && !v.relay);
    for (const li of Array.from(this.controlsList.children) as HTMLElement[]) {
      const name = li.dataset.name ?? "";
      const c = v.controls[name];
      if (!c) continue;
      const value = c.value === null ? "unknown" : String(c.value);
      const lamp = li.querySelector<HTMLElement>(".lamp");
      if (lamp) {
        lamp.dataset.value = value;
        lamp.title = c.value === null ? "unknown" : c.value ? "on" : "off";
      }
      const dir = li.querySelector<HTMLElement>(".cdir");
      if (dir) dir.textContent = c.direction === "input" ? (c.value === null ? "input" : c.value ? "active" : "inactive") : "";
      const b = li.querySelector<HTMLButtonElement>("button");
      if (b) {
        b.textContent = c.value ? "On" : "Off";
        b.setAttribute("aria-pressed", String(!!c.value));
        b.setAttribute("aria-label", `${name}: switch ${c.value ? "off" : "on"}`);
        b.disabled = !canControl || this.pending.has(name);
        b.title = v.relay
          ? "not available through the relay"
          : !v.hasRpc
            ? "not connected"
            : v.role === "view"
              ? "this key may only watch"
              : `switch ${name}`;
      }
    }
  }

  private pill(id: string, level: string, text: string): void {
    const p = el(id);
    p.dataset.level = level;
    const b = p.querySelector("b");
    if (b) b.textContent = text;
  }
}
