import { defineConfig } from "vitest/config";

// The dashboard is served by the frontend manager from `web/dist` (see
// manager/src/frontend/dashboard.rs); `base: "./"` keeps asset URLs relative
// so it also works behind a path prefix.
export default defineConfig({
  base: "./",
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false, chunkSizeWarningLimit: 200 },
  test: { environment: "node", include: ["src/**/*.test.ts"] },
});
