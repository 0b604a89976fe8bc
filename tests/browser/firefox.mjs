// Drives Debian's Firefox ESR for tests/browser.rs over WebDriver BiDi
// (puppeteer-core with browser: "firefox"), with the same one-JSON-command-
// per-line protocol as driver.mjs (open, eval, wait, click, screenshot,
// problems, reload, quit). puppeteer-core never downloads a browser: the one
// at CAMPEER_FIREFOX (default /usr/bin/firefox-esr) is used.
import { createRequire } from "node:module";
import { serveCommands } from "./commands.mjs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const require = createRequire(join(root, "web", "package.json"));
const puppeteer = require("puppeteer-core");

const executablePath = process.env.CAMPEER_FIREFOX || "/usr/bin/firefox-esr";
const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath,
  headless: true,
  extraPrefsFirefox: {
    // Play without a user gesture, as Chromium's
    // --autoplay-policy=no-user-gesture-required does.
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    // Nothing in the background: no updates, telemetry or safe-browsing
    // lists (this machine reaches no such service anyway).
    "app.update.enabled": false,
    "browser.safebrowsing.update.enabled": false,
    "datareporting.policy.dataSubmissionEnabled": false,
    "media.gmp-manager.updateEnabled": false,
  },
});
const pages = [];
/** Console errors and uncaught exceptions, per page. */
const problems = [];

function page(n) {
  const p = pages[n];
  if (!p) throw new Error(`no page ${n}`);
  return p;
}

async function evaluate(p, expr) {
  // A string is evaluated as an expression in the page.
  return await p.evaluate(expr);
}

async function run(c) {
  switch (c.cmd) {
    case "open": {
      const p = await browser.newPage();
      await p.setViewport({ width: c.width ?? 1280, height: c.height ?? 800 });
      const n = pages.length;
      pages.push(p);
      problems.push([]);
      p.on("console", (m) => {
        process.stderr.write(`[firefox page ${n} ${m.type()}] ${m.text()}\n`);
        if (m.type() === "error") problems[n].push(m.text());
      });
      p.on("pageerror", (e) => {
        process.stderr.write(`[firefox page ${n} pageerror] ${e.message}\n`);
        problems[n].push(`uncaught: ${e.message}`);
      });
      await p.goto(c.url, { waitUntil: "load" });
      return n;
    }
    case "eval":
      return await evaluate(page(c.page), c.expr);
    case "wait": {
      const p = page(c.page);
      const deadline = Date.now() + (c.timeout ?? 30000);
      let last;
      for (;;) {
        try {
          const v = await evaluate(p, c.expr);
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
      await page(c.page).click(c.selector);
      return null;
    case "screenshot":
      await page(c.page).screenshot({ path: c.path, fullPage: !!c.fullPage });
      return null;
    case "problems":
      page(c.page);
      return problems[c.page];
    case "reload":
      await page(c.page).reload({ waitUntil: "load" });
      return null;
    case "quit":
      await browser.close();
      return null;
    default:
      throw new Error(`unknown command ${c.cmd}`);
  }
}

await serveCommands(run, () => browser.close());
