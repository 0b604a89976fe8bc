// Mobile constraints that cannot be tested in a real iOS Safari here, held
// by construction: `npm test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const src = join(dirname(fileURLToPath(import.meta.url)), "..", "src");
const html = readFileSync(join(src, "index.html"), "utf8");
const css = readFileSync(join(src, "style.css"), "utf8");

test("iOS Safari may autoplay the video: muted, inline, autoplay", () => {
  const video = /<video\b[^>]*id="video"[^>]*>/.exec(html)?.[0] ?? "";
  for (const attr of ["autoplay", "muted", "playsinline"]) {
    assert.match(video, new RegExp(`\\b${attr}\\b`), `<video> lacks ${attr}: ${video}`);
  }
  // Sound needs a tap: the unmute button exists.
  assert.match(html, /<button id="unmute"[^>]*>Unmute<\/button>/);
});

test("the page fits a 375 px phone: device-width viewport and a narrow layout", () => {
  assert.match(html, /<meta name="viewport" content="width=device-width/);
  const narrow = /@media \(max-width: (\d+)px\)/.exec(css);
  assert.ok(narrow && Number(narrow[1]) >= 375, "a layout for narrow screens");
});
