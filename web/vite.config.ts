// Builds the web client into web/dist, which the Worker serves as static assets.
// Two extra steps beyond a plain Vite build, both in plugins below:
// - the service worker (src/sw/sw.ts) is built as /sw.js with the list of files to precache;
// - the initial JavaScript is measured gzipped and the build fails above the budget.
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import preact from "@preact/preset-vite";
import { defineConfig, type Plugin, type Rollup } from "vite";

const root = fileURLToPath(new URL(".", import.meta.url));
/** The budget for JavaScript loaded before first render (issue 6). */
const INITIAL_JS_LIMIT = 80 * 1024;
const MANIFEST_PLACEHOLDER = /(["'`])__PRECACHE_MANIFEST__\1/;

type Bundle = Rollup.OutputBundle;

function precacheManifest(): Plugin {
  return {
    name: "edge-chat:precache-manifest",
    apply: "build",
    generateBundle(_options, bundle: Bundle) {
      const sw = bundle["sw.js"];
      if (!sw || sw.type !== "chunk") return this.error("sw.js missing from the bundle");
      const files = Object.keys(bundle)
        .filter((f) => f !== "sw.js" && !f.endsWith(".map"))
        .map((f) => `/${f}`)
        .sort();
      // Public files are copied after bundling, so the shell files from web/public are named here.
      const shell = ["/", "/manifest.webmanifest", "/icons/icon-192.png", "/icons/icon-512.png", "/icons/badge-96.png", "/icons/favicon-32.png"];
      const list = [...new Set([...shell, ...files.filter((f) => f !== "/index.html")])];
      const version = hash(list.join("\n") + Object.values(bundle).map((o) => (o.type === "chunk" ? o.code.length : 0)).join(","));
      if (!MANIFEST_PLACEHOLDER.test(sw.code)) return this.error("sw.js has no __PRECACHE_MANIFEST__ placeholder");
      sw.code = sw.code.replace(MANIFEST_PLACEHOLDER, JSON.stringify(JSON.stringify({ version, files: list })));
    },
  };
}

function initialJsBudget(): Plugin {
  return {
    name: "edge-chat:initial-js-budget",
    apply: "build",
    generateBundle(_options, bundle: Bundle) {
      const entry = Object.values(bundle).find((o) => o.type === "chunk" && o.isEntry && o.name === "main");
      if (!entry || entry.type !== "chunk") return this.error("no main entry chunk");
      // The entry and everything it imports statically: what the browser fetches before first render.
      const seen = new Set<string>();
      const visit = (fileName: string) => {
        if (seen.has(fileName)) return;
        seen.add(fileName);
        const chunk = bundle[fileName];
        if (chunk?.type === "chunk") chunk.imports.forEach(visit);
      };
      visit(entry.fileName);
      let raw = 0;
      let gzip = 0;
      for (const fileName of seen) {
        const chunk = bundle[fileName];
        if (chunk?.type !== "chunk") continue;
        raw += Buffer.byteLength(chunk.code);
        gzip += gzipSync(chunk.code, { level: 9 }).byteLength;
      }
      const kib = (n: number) => `${(n / 1024).toFixed(1)} KiB`;
      const line = `initial JS: ${kib(gzip)} gzip (${kib(raw)} raw, ${seen.size} file(s)); limit ${kib(INITIAL_JS_LIMIT)} gzip`;
      if (gzip > INITIAL_JS_LIMIT) return this.error(`${line}: over budget`);
      this.info(line);
      console.log(line);
    },
  };
}

function hash(text: string): string {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
  return (h >>> 0).toString(36);
}

export default defineConfig({
  root,
  publicDir: "public",
  logLevel: "warn",
  plugins: [preact({ prefreshEnabled: false, devToolsEnabled: false }), precacheManifest(), initialJsBudget()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    // Chromium, Firefox and Safari all support modulepreload; the polyfill would be an inline-free
    // but useless 1 KiB.
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
    rollupOptions: {
      input: { main: `${root}index.html`, sw: `${root}src/sw/sw.ts` },
      output: {
        entryFileNames: (chunk) => (chunk.name === "sw" ? "sw.js" : "assets/[name]-[hash].js"),
      },
    },
  },
});
