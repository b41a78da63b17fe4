// Bundles the browser producer as a page ships it (with its dependencies, minified) into
// dist/eventline-browser.js, for <script type="module"> without a bundler, and measures
// it gzipped. Fails the build above the 20 KiB budget the README states.
import { build } from "esbuild";
import { writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const LIMIT_BYTES = 20 * 1024;
const result = await build({
  entryPoints: ["dist/browser/index.js"],
  bundle: true,
  minify: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  write: false,
  metafile: true,
});
const code = result.outputFiles[0].contents;
writeFileSync("dist/eventline-browser.js", code);
const gzipped = gzipSync(code, { level: 9 }).length;
const kib = (bytes) => (bytes / 1024).toFixed(1);
console.log(
  `browser producer (@eventline/client/browser with its dependencies): ${kib(code.length)} KiB minified, ` +
    `${kib(gzipped)} KiB minified+gzipped (budget ${kib(LIMIT_BYTES)} KiB)`,
);
if (process.argv.includes("--verbose")) {
  const inputs = Object.entries(result.metafile.outputs)[0][1].inputs;
  for (const [path, { bytesInOutput }] of Object.entries(inputs).sort((a, b) => b[1].bytesInOutput - a[1].bytesInOutput).slice(0, 25)) {
    console.log(`  ${String(bytesInOutput).padStart(7)}  ${path}`);
  }
}
if (gzipped > LIMIT_BYTES) {
  console.error(`the browser producer is over its ${kib(LIMIT_BYTES)} KiB budget`);
  process.exit(1);
}
