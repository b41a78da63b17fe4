// Builds the console into dist/ (index.html, app.js, app.css), which the server embeds
// (crates/eventline-server/src/gateway/console.rs). The bundle is checked in so building
// the binary needs no npm; `--check` rebuilds in memory and fails when dist/ differs, and
// every build fails when the first load is over its gzipped budget.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const BUDGET_BYTES = 150 * 1024;
const here = (path) => new URL(path, import.meta.url).pathname;
const check = process.argv.includes("--check");

const result = await build({
  entryPoints: [here("src/main.tsx")],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2020",
  jsx: "automatic",
  jsxImportSource: "preact",
  legalComments: "none",
  outdir: "out",
  write: false,
});
const script = result.outputFiles.find((file) => file.path.endsWith(".js")).text;
const stylesheet = (await build({ entryPoints: [here("src/style.css")], bundle: true, minify: true, write: false, outdir: "out" }))
  .outputFiles[0].text;
// A content hash in each asset's URL lets the server cache assets for good.
const version = (text) => createHash("sha256").update(text).digest("hex").slice(0, 12);
const page = readFileSync(here("src/index.html"), "utf8")
  .replace("{{script}}", `/console/app.js?v=${version(script)}`)
  .replace("{{stylesheet}}", `/console/app.css?v=${version(stylesheet)}`);

const files = { "index.html": page, "app.js": script, "app.css": stylesheet };
let total = 0;
for (const [name, text] of Object.entries(files)) {
  const gzipped = gzipSync(text, { level: 9 }).length;
  total += gzipped;
  console.log(`${name.padEnd(10)} ${String(text.length).padStart(7)} B, ${(gzipped / 1024).toFixed(1)} KiB gzipped`);
}
console.log(`first load: ${(total / 1024).toFixed(1)} KiB gzipped (budget ${BUDGET_BYTES / 1024} KiB)`);
if (total > BUDGET_BYTES) {
  console.error("the console is over its size budget");
  process.exit(1);
}
const stale = [];
for (const [name, text] of Object.entries(files)) {
  const path = here(`dist/${name}`);
  if (check) {
    let committed = "";
    try {
      committed = readFileSync(path, "utf8");
    } catch {}
    if (committed !== text) stale.push(name);
  } else {
    writeFileSync(path, text);
  }
}
if (stale.length > 0) {
  console.error(`console/dist is stale (${stale.join(", ")}): run npm run build in console/ and commit dist/`);
  process.exit(1);
}
