// Maps the page's clock (performance.now()) to the device's (the clock of
// the frame stamps, reported by the `ping` method in microseconds).
//
// Each ping gives one estimate: offset = device_now - (sent + received) / 2,
// off by at most half the round trip. The estimate from the fastest of the
// recent round trips is the tightest, so that is the one used.

export interface ClockSample {
  rttMs: number;
  offsetMs: number;
}

export class ClockMap {
  private samples: ClockSample[] = [];
  constructor(private readonly keep = 15) {}

  /** Records a ping sent at `sentMs`, answered with `deviceUs`, received at `receivedMs`. */
  add(sentMs: number, deviceUs: number, receivedMs: number): ClockSample {
    const rttMs = Math.max(0, receivedMs - sentMs);
    const s = { rttMs, offsetMs: deviceUs / 1000 - (sentMs + receivedMs) / 2 };
    this.samples.push(s);
    if (this.samples.length > this.keep) this.samples.shift();
    return s;
  }

  /** Device ms minus page ms, from the fastest recent ping; null before any. */
  get offsetMs(): number | null {
    const best = this.best();
    return best ? best.offsetMs : null;
  }

  /** The latest round trip, ms. */
  get lastRttMs(): number | null {
    return this.samples.length ? this.samples[this.samples.length - 1].rttMs : null;
  }

  /** The device's clock at page time `pageMs`, or null before any ping. */
  deviceMs(pageMs: number): number | null {
    const o = this.offsetMs;
    return o === null ? null : pageMs + o;
  }

  reset(): void {
    this.samples = [];
  }

  private best(): ClockSample | null {
    let b: ClockSample | null = null;
    for (const s of this.samples) if (!b || s.rttMs < b.rttMs) b = s;
    return b;
  }
}

/** Median of a list of numbers; null when empty. */
export function median(xs: number[]): number | null {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
