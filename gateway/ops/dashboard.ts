import { readFileSync } from "node:fs";

/** What the dashboard reads of a request (node:http and node:http2 requests both fit). */
export interface DashboardRequest {
  readonly method?: string | undefined;
  readonly url?: string | undefined;
}

/** What the dashboard uses of a response (node:http and node:http2 responses both fit). */
export interface DashboardResponse {
  writeHead(statusCode: number, headers: Record<string, string | number>): unknown;
  end(data: string | Uint8Array): unknown;
}

/** Paths the dashboard answers (GET and HEAD). `/` redirects to `/dashboard`. */
export const dashboardPaths = ["/", "/dashboard", "/dashboard/", "/dashboard.js"] as const;

const assets = {
  "/dashboard": { file: "dashboard.html", type: "text/html; charset=utf-8" },
  "/dashboard/": { file: "dashboard.html", type: "text/html; charset=utf-8" },
  "/dashboard.js": {
    // Not dashboard.js on disk: the compiled build puts this module there (dist/gateway/ops/).
    file: "dashboard-page.js",
    type: "text/javascript; charset=utf-8",
  },
} as const;

// The page talks only to this origin; scripts come only from /dashboard.js (no inline script).
const securityHeaders = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
};

/**
 * Serves the live dashboard (SPEC 9): a static page and its script, which call Login and
 * `mygateway.admin.v1.AdminService` with the Connect protocol (JSON over fetch). Returns
 * false for any other request. The files are read once, on first use.
 */
export function createDashboardHandler(): (request: DashboardRequest, response: DashboardResponse) => boolean {
  const cache = new Map<string, Buffer>();
  const read = (file: string) => {
    let body = cache.get(file);
    if (body === undefined) {
      body = readFileSync(new URL(file, import.meta.url));
      cache.set(file, body);
    }
    return body;
  };
  return (request, response) => {
    if (request.method !== "GET" && request.method !== "HEAD") return false;
    const path = (request.url ?? "").split("?")[0] ?? "";
    if (path === "/") {
      response.writeHead(302, {
        location: "/dashboard",
        "content-type": "text/plain",
      });
      response.end("see /dashboard\n");
      return true;
    }
    const asset = assets[path as keyof typeof assets];
    if (asset === undefined) return false;
    const body = read(asset.file);
    response.writeHead(200, {
      ...securityHeaders,
      "content-type": asset.type,
      "content-length": body.length,
    });
    response.end(request.method === "HEAD" ? "" : body);
    return true;
  };
}
