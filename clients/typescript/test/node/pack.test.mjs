// `npm pack` gives a tarball that a fresh project installs and imports.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const PACKAGE = new URL("../../", import.meta.url).pathname;

test("the packed tarball installs in a fresh project and its entries import", () => {
  const scratch = mkdtempSync(join(tmpdir(), "eventline-pack-"));
  try {
    const tarball = execFileSync("npm", ["pack", "--silent", "--pack-destination", scratch], { cwd: PACKAGE, encoding: "utf8" }).trim().split("\n").pop();
    const project = join(scratch, "app");
    execFileSync("mkdir", [project]);
    writeFileSync(join(project, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
    execFileSync("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error", join(scratch, tarball)], { cwd: project, stdio: "inherit" });
    const script = `
      const node = await import("@eventline/client");
      const browser = await import("@eventline/client/browser");
      const client = node.createClient({ baseUrl: "http://127.0.0.1:1", apiKey: "k" });
      let field;
      try { client.track(""); } catch (error) { field = error.field; }
      const helpers = ["count", "countEvents", "topEventTypes", "series", "timeseries", "funnel", "retention"];
      console.log(JSON.stringify([typeof node.createClient, typeof browser.createClient, field, helpers.filter((name) => typeof client[name] !== "function")]));`;
    const output = execFileSync("node", ["--input-type=module", "-e", script], { cwd: project, encoding: "utf8" });
    assert.deepEqual(JSON.parse(output.trim()), ["function", "function", "event_type", []]);
    for (const types of ["dist/node/index.d.ts", "dist/browser/index.d.ts", "dist/react/index.d.ts"]) {
      assert.ok(existsSync(join(project, "node_modules/@eventline/client", types)), types);
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
});
