// Bundles the console into emailkit/web/static/console/ (committed, so installing emailkit needs no Node).
// Deterministic: no timestamps or hashes in the output, so a rebuild from the lock reproduces the same files.
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";

const out = new URL("../emailkit/web/static/console/", import.meta.url).pathname;
await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await build({
  entryPoints: { console: "src/main.ts" },
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2020",
  outdir: out,
  legalComments: "eof",
  logLevel: "warning",
});
await copyFile("index.html", `${out}index.html`);
