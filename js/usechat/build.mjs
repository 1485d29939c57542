#!/usr/bin/env node
// Bundles the useChat page into a directory: index.html and app.js (React, @ai-sdk/react
// and ai included), ready for any static file server on the relay's origin.
//
//   npm ci --prefix js                       # once: esbuild, react, @ai-sdk/react, ai
//   node js/usechat/build.mjs <output dir>   # e.g. examples/usechat/static
import { copyFile, mkdir } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const out = process.argv[2];
if (!out || process.argv.length > 3) {
  console.error("usage: node js/usechat/build.mjs <output directory>");
  process.exit(2);
}

let esbuild;
try {
  esbuild = await import("esbuild");
} catch {
  console.error("esbuild is not installed: run `npm ci --prefix js` first");
  process.exit(1);
}

const dir = path.resolve(out);
await mkdir(dir, { recursive: true });
const result = await esbuild.build({
  entryPoints: [path.join(here, "main.jsx")],
  outfile: path.join(dir, "app.js"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  jsx: "automatic",
  minify: true,
  legalComments: "none",
  define: { "process.env.NODE_ENV": '"production"' },
  logLevel: "warning",
  metafile: true,
});
await copyFile(path.join(here, "index.html"), path.join(dir, "index.html"));
const bytes = Object.values(result.metafile.outputs).reduce((sum, o) => sum + o.bytes, 0);
console.log(`usechat page: ${dir}/index.html, app.js (${Math.round(bytes / 1024)} KiB)`);
