import { defineConfig } from "vitest/config";

// The app is served from the binary (tauri custom protocol): relative asset
// paths, no dev server needed in CI. TSX is compiled by esbuild with Preact's
// automatic JSX runtime (no plugin). Unit tests (vitest) run in happy-dom.
export default defineConfig({
  base: "./",
  clearScreen: false,
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: { outDir: "dist", target: "es2022", sourcemap: false, emptyOutDir: true },
  test: { environment: "happy-dom", include: ["test/**/*.test.{ts,tsx}"] },
});
