// Bundles the front end into the Python package, so users of the wheel never need node or a
// CDN. Widgets: one ESM module (anywidget loads it) with vega-embed inside. Panel: the
// JupyterLab plugin transpiled to lib/, which `jupyter labextension build` then packs.
import { build } from "esbuild";

const panel = process.argv.includes("--panel");

if (panel) {
  await build({
    entryPoints: ["js/panel/index.ts"],
    outdir: "lib",
    format: "esm",
    target: "es2022",
    bundle: false,
    logLevel: "warning",
  });
} else {
  await build({
    entryPoints: ["js/widget/index.ts"],
    outfile: "pdebug_jupyter/static/widget.js",
    bundle: true,
    format: "esm",
    target: "es2022",
    minify: true,
    legalComments: "linked",
    logLevel: "warning",
  });
}
