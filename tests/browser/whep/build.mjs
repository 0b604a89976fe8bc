// Bundles the WHEP test player (player.ts and the whip-whep package from
// web/node_modules) into <out>/player.js with the page's esbuild, and
// copies index.html next to it. Usage: node build.mjs <out dir>
import { createRequire } from "node:module";
import { copyFile, mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const web = join(here, "..", "..", "..", "web");
const require = createRequire(join(web, "package.json"));
const esbuild = require("esbuild");
const out = process.argv[2];
if (!out) throw new Error("usage: node build.mjs <out dir>");
await mkdir(out, { recursive: true });
await esbuild.build({
  entryPoints: [join(here, "player.ts")],
  bundle: true,
  format: "iife",
  platform: "browser",
  target: ["es2020", "chrome90"],
  nodePaths: [join(web, "node_modules")],
  outfile: join(out, "player.js"),
  logLevel: "warning",
});
await copyFile(join(here, "index.html"), join(out, "index.html"));
