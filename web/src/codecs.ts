/**
 * Which video codecs an offer carries that the camera can send: H.264 with
 * packetization-mode=1 (preferred) or VP8. A browser without either (a
 * Firefox that never fetched its H.264 plugin and has VP8 turned off, say)
 * cannot show the camera's video, and the page says so in words instead of
 * calling again and again.
 */
export interface VideoCodecs {
  /** There is a video section that is not rejected. */
  video: boolean;
  h264: boolean;
  vp8: boolean;
}

/** The words the page shows when a browser offers neither codec. */
export const NO_CODEC_TEXT = "This browser offers no H.264 or VP8, the video formats this camera sends: its video cannot play here.";

/** The video codecs of the first video section of `sdp`. */
export function offeredVideoCodecs(sdp: string): VideoCodecs {
  const out: VideoCodecs = { video: false, h264: false, vp8: false };
  const lines = sdp.split(/\r?\n/);
  let inVideo = false;
  let seen = false;
  const rtpmap = new Map<string, string>();
  const fmtp = new Map<string, string>();
  for (const line of lines) {
    if (line.startsWith("m=")) {
      if (seen) break;
      inVideo = line.startsWith("m=video ");
      if (inVideo) {
        seen = true;
        out.video = line.split(" ")[1] !== "0";
      }
      continue;
    }
    if (!inVideo) continue;
    const map = /^a=rtpmap:(\d+) ([^/]+)\//.exec(line);
    if (map) rtpmap.set(map[1], map[2].toUpperCase());
    const f = /^a=fmtp:(\d+) (.*)$/.exec(line);
    if (f) fmtp.set(f[1], f[2]);
  }
  for (const [pt, codec] of rtpmap) {
    if (codec === "VP8") out.vp8 = true;
    if (codec === "H264") {
      const params = (fmtp.get(pt) ?? "").split(";").map((p) => p.trim().toLowerCase());
      if (params.includes("packetization-mode=1")) out.h264 = true;
    }
  }
  return out;
}

/** True when the offer can carry the camera's video. */
export function canReceiveCameraVideo(offerSdp: string): boolean {
  const c = offeredVideoCodecs(offerSdp);
  return c.video && (c.h264 || c.vp8);
}

/** A video codec the page can be asked to insist on (`?codec=vp8`). */
export type ForcedCodec = "vp8" | "h264";

/** The `codec` query parameter of the page's URL, when it names one. */
export function forcedCodec(search: string): ForcedCodec | null {
  const v = new URLSearchParams(search).get("codec")?.toLowerCase();
  return v === "vp8" || v === "h264" ? v : null;
}

/**
 * The receive codecs to keep when the page insists on `want` (for
 * `setCodecPreferences`): that codec only, so the offer carries nothing
 * else and the camera must answer with it.
 */
export function onlyCodec<T extends { mimeType: string }>(codecs: T[], want: ForcedCodec): T[] {
  const mime = want === "vp8" ? "video/vp8" : "video/h264";
  return codecs.filter((c) => c.mimeType.toLowerCase() === mime);
}
