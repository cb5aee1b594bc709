// Build the Cornerstone3D browser bundle that the imaging timeline's viewer loads from
// app/web/static/vendor/cornerstone/ (served at /apps/vendor/cornerstone/). The server needs no Node
// at run time: the built files are committed, like fhirclient's. Run after changing a pin:
//   npm install && npm run build:cornerstone
// then update the versions and checksums in app/web/static/vendor/README.md (printed below).
//
// Two ES module bundles (esbuild, minified):
//   cornerstone.js               @cornerstonejs/core, tools and dicom-image-loader, exporting
//                                { core, tools, dicomImageLoader }
//   decodeImageFrameWorker.js    the image loader's decoding web worker; the loader starts it as
//                                new URL("./decodeImageFrameWorker.js", import.meta.url), i.e. beside
//                                cornerstone.js
// and the WebAssembly decoders of compressed transfer syntaxes in codecs/ (the app passes
// wasmBasePath), with the licences of every bundled package.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(root, "app/web/static/vendor/cornerstone");
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const modules = join(root, "node_modules");
const packages = ["core", "tools", "dicom-image-loader"].map((p) => `@cornerstonejs/${p}`);

for (const name of packages) {
  const installed = JSON.parse(readFileSync(join(modules, name, "package.json"), "utf8")).version;
  if (installed !== pkg.devDependencies[name]) {
    console.error(`build-cornerstone: package.json pins ${name} ${pkg.devDependencies[name]} but node_modules has ${installed}; run npm install`);
    process.exit(1);
  }
}

mkdirSync(join(out, "codecs"), { recursive: true });
// Node built-ins that Emscripten's decoders and vtk.js's XML writer (xmlbuilder2) require only when
// run under Node: an empty module in the browser bundle, but for the names a module's top level uses
// (xmlbuilder2 declares a class extending EventEmitter; @oozcitak/url reads URL).
const STUBS = {
  events: "class EventEmitter { on() { return this; } emit() { return false; } }\nmodule.exports = EventEmitter;\nmodule.exports.EventEmitter = EventEmitter;",
  url: "module.exports = { URL: globalThis.URL, URLSearchParams: globalThis.URLSearchParams };",
};
const nodeBuiltinsEmpty = {
  name: "node-builtins-empty",
  setup(b) {
    b.onResolve({ filter: /^(fs|path|url|events|crypto|module|worker_threads)$/ }, (a) => ({ path: a.path, namespace: "empty" }));
    b.onLoad({ filter: /.*/, namespace: "empty" }, (a) => ({ contents: STUBS[a.path] ?? "module.exports = {};", loader: "js" }));
  },
};
const common = {
  plugins: [nodeBuiltinsEmpty],
  bundle: true, format: "esm", minify: true, target: "es2020", platform: "browser",
  legalComments: "eof", logLevel: "warning", define: { "process.env.NODE_ENV": '"production"' },
};
await build({
  ...common,
  stdin: {
    contents: [
      'import * as core from "@cornerstonejs/core";',
      'import * as tools from "@cornerstonejs/tools";',
      'import * as dicomImageLoader from "@cornerstonejs/dicom-image-loader";',
      "export { core, tools, dicomImageLoader };",
    ].join("\n"),
    resolveDir: root,
  },
  outfile: join(out, "cornerstone.js"),
});
await build({
  ...common,
  entryPoints: [join(modules, "@cornerstonejs/dicom-image-loader/dist/esm/decodeImageFrameWorker.js")],
  outfile: join(out, "decodeImageFrameWorker.js"),
});

const codecs = {
  "codec-libjpeg-turbo-8bit/dist/libjpegturbowasm_decode.wasm": "libjpegturbowasm_decode.wasm",
  "codec-charls/dist/charlswasm_decode.wasm": "charlswasm_decode.wasm",
  "codec-openjpeg/dist/openjpegwasm_decode.wasm": "openjpegwasm_decode.wasm",
  "codec-openjph/dist/openjphjs.wasm": "openjphjs.wasm",
};
for (const [from, to] of Object.entries(codecs)) copyFileSync(join(modules, "@cornerstonejs", from), join(out, "codecs", to));

// Licences: every package whose code is in a bundle (esbuild's metafile would list them; the
// @cornerstonejs packages and their runtime dependencies are all MIT or BSD-style).
const licences = [];
for (const name of [...packages, "@cornerstonejs/codec-libjpeg-turbo-8bit", "@cornerstonejs/codec-charls",
  "@cornerstonejs/codec-openjpeg", "@cornerstonejs/codec-openjph", "@kitware/vtk.js", "gl-matrix", "comlink",
  "dicom-parser", "@cornerstonejs/jpeg-lossless-decoder-js"]) {
  let text = "";
  for (const file of ["LICENSE", "LICENSE.md", "LICENSE.txt", "license"]) {
    try { text = readFileSync(join(modules, name, file), "utf8"); break; } catch { /* next */ }
  }
  const meta = JSON.parse(readFileSync(join(modules, name, "package.json"), "utf8"));
  licences.push(`==== ${name} ${meta.version} (${meta.license}) ====\n${text || "(no licence file in the package; see package.json)"}\n`);
}
writeFileSync(join(out, "LICENSES.txt"), licences.join("\n"));

for (const file of ["cornerstone.js", "decodeImageFrameWorker.js"]) {
  const bytes = readFileSync(join(out, file));
  console.log(`${file}  ${bytes.length} bytes  sha256 ${createHash("sha256").update(bytes).digest("hex")}`);
}
console.log("versions: " + packages.map((p) => `${p} ${pkg.devDependencies[p]}`).join(", "));
