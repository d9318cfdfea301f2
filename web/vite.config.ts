import { defineConfig } from "vite";

// Built into ../assets/web, which the server embeds and serves at / (index.html) and
// /web/assets/… (everything else). File names carry a content hash, so the build is the same
// bytes for the same sources, and the server can cache the assets for ever.
export default defineConfig({
  base: "/web/",
  build: {
    outDir: "../assets/web",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: "es2022",
  },
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
});
