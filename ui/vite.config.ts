import { defineConfig } from "vite";

// The app is served from the binary (tauri custom protocol): relative asset
// paths, no dev server needed in CI.
export default defineConfig({
  base: "./",
  clearScreen: false,
  build: { outDir: "dist", target: "es2022", sourcemap: false, emptyOutDir: true },
});
