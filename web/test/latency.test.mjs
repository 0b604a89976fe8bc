// The page's capture-to-display figures, stage by stage (src/latency.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { LatencyWindows, STAGES, describeStages } from "../.test-build/lib.mjs";

// Device clock = page clock + 5000 ms.
const toDevice = (pageMs) => pageMs + 5000;

test("each stage's figure is capture to that stage on the device's clock", () => {
  const w = new LatencyWindows(30);
  // Captured at device 5100 = page 100.
  assert.ok(w.add(5100, { received: 102, composed: 102.5, shown: 112, expected: 145.3 }, toDevice));
  assert.deepEqual(w.samples("received"), [2]);
  assert.deepEqual(w.samples("composed"), [2.5]);
  assert.deepEqual(w.samples("shown"), [12]);
  assert.ok(Math.abs(w.samples("expected")[0] - 45.3) < 1e-6);
  assert.deepEqual(Object.keys(w.all()), [...STAGES]);
});

test("a frame without its shown figure adds nothing", () => {
  const w = new LatencyWindows(30);
  // No clock mapping yet.
  assert.equal(w.add(5100, { received: 102, shown: 112 }, () => null), false);
  // A stamp that reads as captured an hour ago: misread.
  assert.equal(w.add(5100 - 3_600_000, { received: 102, shown: 112 }, toDevice), false);
  for (const s of STAGES) assert.deepEqual(w.samples(s), [], s);
});

test("stages a browser does not report are left out alone", () => {
  const w = new LatencyWindows(30);
  // Firefox, or a source that is not WebRTC: no receiveTime; zero and NaN are "not known".
  assert.ok(w.add(5100, { shown: 110, received: undefined, composed: 0, expected: NaN }, toDevice));
  assert.deepEqual(w.samples("shown"), [10]);
  assert.deepEqual(w.samples("received"), []);
  assert.deepEqual(w.samples("composed"), []);
  assert.deepEqual(w.samples("expected"), []);
});

test("the stamp's capture time wraps at 2^32 ms", () => {
  const w = new LatencyWindows(30);
  // Capture at device 2^32 - 4 ms; shown at device 2^32 + 6 ms (stamp wrapped).
  const page = (2 ** 32 + 6) - 5000;
  assert.ok(w.add(2 ** 32 - 4, { shown: page }, toDevice));
  assert.deepEqual(w.samples("shown"), [10]);
});

test("each window keeps the last figures only, and reset empties it", () => {
  const w = new LatencyWindows(3);
  for (let i = 0; i < 5; i++) w.add(5100, { shown: 100 + i }, toDevice);
  assert.deepEqual(w.samples("shown"), [2, 3, 4]);
  const copy = w.samples("shown");
  copy.push(99);
  assert.deepEqual(w.samples("shown"), [2, 3, 4]);
  w.reset();
  assert.deepEqual(w.samples("shown"), []);
});

test("the stages are described in words, each by its median", () => {
  assert.equal(describeStages({ received: [], composed: [], shown: [], expected: [] }), "");
  assert.equal(
    describeStages({ received: [2, 1.94, 9], composed: [2.5], shown: [12, 8, 9], expected: [] }),
    "from capture: last packet in 2 ms, to the compositor 2.5 ms, in the page 9 ms",
  );
});
