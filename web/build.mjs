// Builds the viewer page: web/src -> web/dist (app.js, style.css, index.html).
// `node build.mjs --test-lib` instead bundles the DOM-free modules for the
// unit tests in test/ (into .test-build/).
import * as esbuild from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, "src");

if (process.argv.includes("--test-lib")) {
  const out = join(here, ".test-build");
  await rm(out, { recursive: true, force: true });
  await esbuild.build({
    stdin: {
      contents: ["protocol", "auth", "pairing", "stamp", "clock", "latency", "codecs", "relay", "session", "ice", "remote"].map((m) => `export * from "./${m}";`).join("\n"),
      resolveDir: src,
      loader: "ts",
    },
    bundle: true,
    format: "esm",
    platform: "node",
    target: "node18",
    outfile: join(out, "lib.mjs"),
    logLevel: "warning",
  });
} else {
  const dist = join(here, "dist");
  await rm(dist, { recursive: true, force: true });
  await mkdir(dist, { recursive: true });
  // Browsers from 2021 on: Safari 15 (iOS), Chrome/Edge 90, Firefox 90.
  const target = ["es2020", "chrome90", "edge90", "firefox90", "safari15"];
  await esbuild.build({
    entryPoints: [join(src, "main.ts")],
    bundle: true,
    minify: true,
    format: "iife",
    platform: "browser",
    target,
    outfile: join(dist, "app.js"),
    // The bundled libraries' licence notices stay in the file.
    legalComments: "eof",
    logLevel: "warning",
  });
  await esbuild.build({
    entryPoints: [join(src, "style.css")],
    bundle: true,
    minify: true,
    target,
    outfile: join(dist, "style.css"),
    logLevel: "warning",
  });
  await copyFile(join(src, "index.html"), join(dist, "index.html"));
  console.log("viewer page built in web/dist");
}
