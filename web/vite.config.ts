import { defineConfig } from "vitest/config";

// The dashboard is served by the frontend manager from `web/dist` (see
// manager/src/frontend/dashboard.rs); `base: "./"` keeps asset URLs relative
// so it also works behind a path prefix. `npm run dev` serves the sources
// with live reload and forwards the frontend's routes to MERIDIAN_FRONTEND
// (default http://127.0.0.1:8080, where `meridian up` listens).
const frontend = process.env.MERIDIAN_FRONTEND ?? "http://127.0.0.1:8080";

export default defineConfig({
  base: "./",
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false, chunkSizeWarningLimit: 200 },
  server: {
    proxy: {
      "/ws": { target: frontend, ws: true },
      "/dashboard-config.json": frontend,
    },
  },
  test: { environment: "node", include: ["src/**/*.test.ts"] },
});
