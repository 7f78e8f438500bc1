// Bundles the console into emailkit/web/static/console/ (committed, so installing emailkit needs no Node).
// Deterministic: no timestamps in the output, and chunks are named by a hash of their content, so a rebuild
// from the lock reproduces the same files.
import { build } from "esbuild";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";

const out = new URL("../emailkit/web/static/console/", import.meta.url).pathname;
await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
const result = await build({
  entryPoints: { console: "src/main.ts" },
  bundle: true,
  minify: true,
  format: "esm",
  // Screens loaded on demand (import()) become chunks named by their content's hash: the first load fetches
  // only the shell and the campaigns list, and a chunk's name changes whenever its content does.
  splitting: true,
  chunkNames: "chunk-[hash]",
  target: "es2020",
  outdir: out,
  legalComments: "eof",
  logLevel: "warning",
  metafile: true,
});
// The chunks the entry imports statically are announced in the page (modulepreload), so the browser fetches
// them with the entry rather than after it has parsed the entry.
const entry = Object.entries(result.metafile.outputs).find(([, o]) => o.entryPoint === "src/main.ts");
const preloads = entry[1].imports
  .filter((i) => i.kind === "import-statement")
  .map((i) => `  <link rel="modulepreload" href="/static/console/${i.path.split("/").pop()}">\n`)
  .sort()
  .join("");
const page = await readFile("index.html", "utf8");
await writeFile(`${out}index.html`, page.replace("  <script type=\"module\"", `${preloads}  <script type="module"`));
