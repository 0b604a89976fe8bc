// Capture-to-display figures from stamped frames, split by where the frame
// was on its way (docs/viewer.md, "Latency and the frame stamp").
//
// For each frame the page sees, the browser's requestVideoFrameCallback
// tells when its last packet arrived (receiveTime), when the decoded frame
// went to the compositor (presentationTime) and when the browser expects it
// on the screen (expectedDisplayTime); the callback itself runs in the
// rendering step that has the frame. All are page times; the stamp holds
// the capture time on the device's clock, and the clock map joins the two.

import { median } from "./clock";
import { diffMod32 } from "./stamp";

/** When one frame reached each stage, in page time (performance.now()). */
export interface FrameTimes {
  /** Its last packet arrived (receiveTime; WebRTC sources only). */
  received?: number;
  /** The decoded frame was handed to the compositor (presentationTime). */
  composed?: number;
  /** The page's frame callback ran with it: the frame is in the page. */
  shown: number;
  /**
   * When the browser expects it on the screen (expectedDisplayTime). In
   * Chromium's render-on-arrival path this is the callback's frame time
   * plus two refresh intervals: its model of drawing and scan-out, the same
   * for any content, and with no display at all in a headless browser.
   */
  expected?: number;
}

export type Stage = keyof FrameTimes;
export const STAGES: readonly Stage[] = ["received", "composed", "shown", "expected"];

/** A figure outside these bounds (ms) is a misread stamp or a clock not yet mapped. */
const MIN_MS = -1000;
const MAX_MS = 60_000;

/** The last `keep` figures of each stage, capture to that stage, in ms. */
export class LatencyWindows {
  private readonly w = new Map<Stage, number[]>();

  constructor(private readonly keep = 30) {
    this.reset();
  }

  /**
   * Adds one frame captured at `captureMs` (device clock, ms mod 2^32).
   * `toDevice` maps a page time to the device's clock, null before the
   * first `ping`. False (and nothing added) when the frame's shown figure
   * cannot be had; a missing or implausible other stage is left out alone.
   */
  add(captureMs: number, times: FrameTimes, toDevice: (pageMs: number) => number | null): boolean {
    const figure = (at: number | undefined): number | null => {
      if (typeof at !== "number" || !Number.isFinite(at) || at <= 0) return null;
      const device = toDevice(at);
      if (device === null) return null;
      const ms = diffMod32(device, captureMs);
      return ms > MIN_MS && ms < MAX_MS ? ms : null;
    };
    if (figure(times.shown) === null) return false;
    for (const stage of STAGES) {
      const ms = figure(times[stage]);
      if (ms === null) continue;
      const list = this.w.get(stage)!;
      list.push(ms);
      if (list.length > this.keep) list.shift();
    }
    return true;
  }

  /** The figures of one stage, oldest first (a copy). */
  samples(stage: Stage): number[] {
    return [...this.w.get(stage)!];
  }

  /** Every stage's figures, for the page's exposed state. */
  all(): Record<Stage, number[]> {
    return Object.fromEntries(STAGES.map((s) => [s, this.samples(s)])) as Record<Stage, number[]>;
  }

  reset(): void {
    for (const s of STAGES) this.w.set(s, []);
  }
}

const STAGE_WORDS: Record<Stage, string> = {
  received: "last packet in",
  composed: "to the compositor",
  shown: "in the page",
  expected: "on screen (the browser's estimate)",
};

/**
 * The median of each stage in words, for the latency figure's tooltip:
 * "from capture: last packet in 2 ms, to the compositor 3 ms, ...". Stages
 * without figures are left out; empty when there are none.
 */
export function describeStages(stages: Record<Stage, number[]>): string {
  const parts: string[] = [];
  for (const stage of STAGES) {
    const m = median(stages[stage] ?? []);
    if (m !== null) parts.push(`${STAGE_WORDS[stage]} ${Math.round(m * 10) / 10} ms`);
  }
  return parts.length ? `from capture: ${parts.join(", ")}` : "";
}
