// Builds the web UI into dist/: app.js (src/main.tsx and everything it imports, Preact and
// xterm.js included, minified), plus the static files copied from src/ and xterm.js's xterm.css. Exits non-zero on any error.
import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, "src");
const dist = join(here, "dist");
const staticFiles = ["index.html", "app.css", "favicon.svg"];

try {
  await rm(dist, { recursive: true, force: true });
  await mkdir(dist, { recursive: true });
  await esbuild.build({
    entryPoints: [join(src, "main.tsx")],
    outfile: join(dist, "app.js"),
    bundle: true,
    minify: true,
    format: "iife",
    target: "es2020",
    platform: "browser",
    jsx: "automatic",
    jsxImportSource: "preact",
    legalComments: "none",
    logLevel: "warning",
  });
  for (const file of staticFiles) {
    await copyFile(join(src, file), join(dist, file));
  }
  // xterm.js's own stylesheet, linked from index.html (no CDN: the CSP is default-src 'self').
  await copyFile(join(here, "node_modules/@xterm/xterm/css/xterm.css"), join(dist, "xterm.css"));
  console.log(`built ${dist}: app.js, ${staticFiles.join(", ")}, xterm.css`);
} catch (error) {
  // esbuild has already printed its diagnostics; anything else (a missing file) is shown here.
  if (!(error && typeof error === "object" && "errors" in error)) console.error(error);
  process.exit(1);
}
