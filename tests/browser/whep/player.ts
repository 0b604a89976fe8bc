// A WHEP player made of a client that is not campeer's: the `whip-whep`
// npm package (medooze's WHIP/WHEP reference client), bundled by
// tests/browser/whep/build.mjs. tests/browser.rs serves it from another
// origin than the device, so every request is a real CORS one. The page
// reads the device's frame stamps from decoded frames (web/src/stamp.ts).
import { WHEPClient } from "whip-whep/whep.js";
import { readStamp, type Stamp } from "../../../web/src/stamp";

interface State {
  state: "idle" | "starting" | "playing" | "refused" | "stopped";
  error: string | null;
  frames: number;
  stampsRead: number;
  lastStamp: Stamp | null;
  width: number;
  height: number;
  /** From the POST to the first decoded frame, ms. */
  postToFirstFrameMs: number | null;
}

const st: State = {
  state: "idle",
  error: null,
  frames: 0,
  stampsRead: 0,
  lastStamp: null,
  width: 0,
  height: 0,
  postToFirstFrameMs: null,
};
let client: WHEPClient | null = null;
const video = document.getElementById("video") as HTMLVideoElement;
const canvas = document.createElement("canvas");
const ctx = canvas.getContext("2d", { willReadFrequently: true });

function onFrame(startedAt: number): void {
  const w = video.videoWidth;
  const h = video.videoHeight;
  st.frames++;
  st.width = w;
  st.height = h;
  if (st.postToFirstFrameMs === null) st.postToFirstFrameMs = Math.round(performance.now() - startedAt);
  st.state = "playing";
  if (ctx && w >= 256 && h >= 16) {
    canvas.width = w;
    canvas.height = 16;
    ctx.drawImage(video, 0, 0, w, 16, 0, 0, w, 16);
    const stamp = readStamp(ctx.getImageData(0, 0, w, 16).data, w, 16);
    if (stamp) {
      st.lastStamp = stamp;
      st.stampsRead++;
    }
  }
  video.requestVideoFrameCallback(() => onFrame(startedAt));
}

/** Starts playing from `url` with bearer `token` (may be empty). */
async function start(url: string, token: string): Promise<string> {
  st.state = "starting";
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.ontrack = (e) => {
    if (e.track.kind !== "video") return;
    video.srcObject = new MediaStream([e.track]);
    void video.play().catch(() => undefined);
  };
  client = new WHEPClient();
  const startedAt = performance.now();
  video.requestVideoFrameCallback(() => onFrame(startedAt));
  try {
    await client.view(pc, url, token || undefined);
  } catch (e) {
    st.state = "refused";
    st.error = String(e);
    pc.close();
    client = null;
    return st.error;
  }
  return "ok";
}

/** Ends the session: the client closes its connection and DELETEs. */
async function stop(): Promise<string> {
  if (!client) return "no session";
  await client.stop();
  client = null;
  st.state = "stopped";
  return "stopped";
}

declare global {
  interface Window {
    whepTest: { st: State; start: typeof start; stop: typeof stop };
  }
}
window.whepTest = { st, start, stop };
