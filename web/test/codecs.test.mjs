// Which video codecs an offer carries (web/src/codecs.ts): `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { offeredVideoCodecs, canReceiveCameraVideo, forcedCodec, onlyCodec } from "../.test-build/lib.mjs";

const head = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
const audio = "m=audio 9 UDP/TLS/RTP/SAVPF 109\r\na=rtpmap:109 opus/48000/2\r\n";

test("Debian's Firefox ESR offer (VP8, VP9, AV1, no H.264) can take the camera's video as VP8", () => {
  const sdp = `${head}m=video 9 UDP/TLS/RTP/SAVPF 120 124 121 125 99\r\na=rtpmap:120 VP8/90000\r\na=rtpmap:121 VP9/90000\r\na=rtpmap:99 AV1/90000\r\n${audio}`;
  assert.deepEqual(offeredVideoCodecs(sdp), { video: true, h264: false, vp8: true });
  assert.equal(canReceiveCameraVideo(sdp), true);
});

test("H.264 counts only with packetization-mode=1", () => {
  const mode0 = `${head}m=video 9 UDP/TLS/RTP/SAVPF 97\r\na=rtpmap:97 H264/90000\r\na=fmtp:97 profile-level-id=42e01f;packetization-mode=0\r\n`;
  assert.equal(canReceiveCameraVideo(mode0), false);
  const mode1 = mode0.replace("packetization-mode=0", "packetization-mode=1");
  assert.deepEqual(offeredVideoCodecs(mode1), { video: true, h264: true, vp8: false });
});

test("an offer with only VP9/AV1, or no video section, cannot take the camera's video", () => {
  const vp9 = `${head}m=video 9 UDP/TLS/RTP/SAVPF 121\r\na=rtpmap:121 VP9/90000\r\n${audio}`;
  assert.equal(canReceiveCameraVideo(vp9), false);
  assert.equal(canReceiveCameraVideo(`${head}${audio}`), false);
  // Codecs of the audio section are not video codecs.
  const vp8InAudio = `${head}${audio}a=rtpmap:120 VP8/90000\r\n`;
  assert.equal(offeredVideoCodecs(vp8InAudio).vp8, false);
});

test("?codec= forces one codec and nothing else", () => {
  assert.equal(forcedCodec("?codec=vp8"), "vp8");
  assert.equal(forcedCodec("?x=1&codec=H264"), "h264");
  assert.equal(forcedCodec("?codec=vp9"), null);
  assert.equal(forcedCodec(""), null);
  const caps = [
    { mimeType: "video/VP8" },
    { mimeType: "video/rtx" },
    { mimeType: "video/H264", sdpFmtpLine: "packetization-mode=1" },
    { mimeType: "video/VP9" },
  ];
  assert.deepEqual(onlyCodec(caps, "vp8"), [{ mimeType: "video/VP8" }]);
  assert.deepEqual(onlyCodec(caps, "h264").length, 1);
});
