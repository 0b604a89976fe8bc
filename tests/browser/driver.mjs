// Drives Debian's Chromium for tests/browser.rs, one JSON command per line
// on stdin, one JSON reply per line on stdout:
//   {"id":1,"cmd":"open","url":"http://127.0.0.1:8080/"}  -> {"id":1,"ok":true,"value":0}
//   {"id":2,"cmd":"wait","page":0,"expr":"window.campeer.state === 'playing'","timeout":30000}
//   {"id":3,"cmd":"eval","page":0,"expr":"window.campeer.framesSeen"}
//   {"id":4,"cmd":"click","page":0,"selector":"button[data-control=led]"}
//   {"id":5,"cmd":"fill","page":0,"selector":"#key-id","value":"phone"}
//   {"id":6,"cmd":"select","page":0,"selector":"#key-role","value":"view"}
//   {"id":7,"cmd":"screenshot","page":0,"path":"docs/viewer.png"}
//   {"id":8,"cmd":"reload","page":0}
//   {"id":9,"cmd":"front","page":0}     -> brings the page's tab to the front
//   {"id":9,"cmd":"problems","page":0}   -> console errors and uncaught exceptions so far
//   {"id":10,"cmd":"close","page":0}   -> leaves the page (its bye goes out), closes the tab
//   {"id":11,"cmd":"quit"}
// Every page records the remote descriptions it sets and its peer
// connections on window.__test ({remote: [sdp...], pcs: [...]}).
// Failures answer {"id":N,"ok":false,"error":"..."}. The page's console and
// errors go to stderr. playwright-core comes from web/node_modules; it never
// downloads a browser: the one at CAMPEER_CHROMIUM (default /usr/bin/chromium)
// is used.
import { createRequire } from "node:module";
import { serveCommands } from "./commands.mjs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const require = createRequire(join(root, "web", "package.json"));
const { chromium } = require("playwright-core");

const executablePath = process.env.CAMPEER_CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    // tests/browser.rs serves HTTPS with certificates made at test time.
    "--ignore-certificate-errors",
  ],
});
// The page runs under its own Content-Security-Policy (no eval): waiting is
// done by polling page.evaluate, which DevTools runs outside the policy,
// rather than waitForFunction, which the policy would refuse.
const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
const pages = [];
/** Console errors and uncaught exceptions, per page. */
const problems = [];

function page(n) {
  const p = pages[n];
  if (!p) throw new Error(`no page ${n}`);
  return p;
}

async function run(c) {
  switch (c.cmd) {
    case "open": {
      const p = await context.newPage();
      const n = pages.length;
      pages.push(p);
      problems.push([]);
      p.on("console", (m) => {
        process.stderr.write(`[page ${n} ${m.type()}] ${m.text()}\n`);
        if (m.type() === "error") problems[n].push(m.text());
      });
      // For the tests: every description the page sets and its peer
      // connections, on window.__test (outside the page's own code).
      await p.addInitScript(() => {
        const t = (window.__test = { remote: [], pcs: [] });
        const set = RTCPeerConnection.prototype.setRemoteDescription;
        RTCPeerConnection.prototype.setRemoteDescription = function (d, ...rest) {
          if (d && d.sdp) t.remote.push(d.sdp);
          if (!t.pcs.includes(this)) t.pcs.push(this);
          return set.call(this, d, ...rest);
        };
      });
      p.on("pageerror", (e) => {
        process.stderr.write(`[page ${n} pageerror] ${e.message}\n`);
        problems[n].push(`uncaught: ${e.message}`);
      });
      await p.goto(c.url, { waitUntil: "load" });
      return n;
    }
    case "eval":
      return await page(c.page).evaluate(c.expr);
    case "wait": {
      const p = page(c.page);
      const deadline = Date.now() + (c.timeout ?? 30000);
      let last;
      for (;;) {
        try {
          const v = await p.evaluate(c.expr);
          if (v) return v;
          last = v;
        } catch (e) {
          last = `threw ${e.message}`;
        }
        if (Date.now() > deadline) throw new Error(`timed out after ${c.timeout ?? 30000} ms (last value: ${JSON.stringify(last)})`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    case "click":
      await page(c.page).click(c.selector, { timeout: c.timeout ?? 10000 });
      return null;
    case "fill":
      await page(c.page).fill(c.selector, c.value, { timeout: c.timeout ?? 10000 });
      return null;
    case "select":
      await page(c.page).selectOption(c.selector, c.value, { timeout: c.timeout ?? 10000 });
      return null;
    case "screenshot":
      await page(c.page).screenshot({ path: c.path, fullPage: !!c.fullPage });
      return null;
    case "front":
      // Only the front tab renders at full rate in headless Chromium.
      await page(c.page).bringToFront();
      return null;
    case "problems":
      page(c.page);
      return problems[c.page];
    case "reload":
      await page(c.page).reload({ waitUntil: "load" });
      return null;
    case "close": {
      // Leaving first runs the page's pagehide handler (its bye), which
      // closing the tab outright may cut short.
      const p = page(c.page);
      await p.goto("about:blank");
      await p.close();
      return null;
    }
    case "quit":
      await browser.close();
      return null;
    default:
      throw new Error(`unknown command ${c.cmd}`);
  }
}

await serveCommands(run, () => browser.close());
