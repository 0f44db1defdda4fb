import { spawnSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Child, childPids, spawnChild, waitForPort } from "./proc.js";

/** True when Debian's nginx is installed. */
export function haveNginx(): boolean {
  return spawnSync("nginx", ["-v"], { stdio: "ignore" }).status === 0;
}

/** The version line of nginx (`nginx/1.22.1`). */
export function nginxVersion(): string {
  const r = spawnSync("nginx", ["-v"], { encoding: "utf8" });
  return (r.stderr || r.stdout).trim().replace(/^nginx version: /, "");
}

/** A running nginx `grpc_pass` proxy in front of one backend. */
export interface Nginx {
  readonly port: number;
  readonly child: Child;
  /** Master and worker pids (CPU is summed over them). */
  pids(): number[];
  stop(): Promise<void>;
}

/**
 * The baseline: nginx with one worker, loopback only, tuned as STACK-NOTES says (without it,
 * nginx sends GOAWAY after 1,000 calls and opens one backend connection per call): upstream
 * keepalive with many connections, huge keepalive_requests both sides, long gRPC timeouts.
 */
export function nginxConfig(dir: string, port: number, backend: string, tls?: NginxTls): string {
  const user = process.getuid?.() === 0 ? "user root;\n" : "";
  return `${user}worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream backend {
    server ${backend};
    keepalive 128;
    keepalive_requests 1000000;
    keepalive_timeout 1h;
  }
  server {
    listen 127.0.0.1:${port}${tls ? " ssl" : ""} http2;${
      tls
        ? `
    ssl_certificate ${tls.cert};
    ssl_certificate_key ${tls.key};
    ssl_protocols TLSv1.2 TLSv1.3;`
        : ""
    }
    keepalive_requests 1000000;
    keepalive_timeout 1h;
    http2_max_concurrent_streams 1024;
    location / {
      grpc_pass ${tls ? "grpcs" : "grpc"}://backend;${
        tls
          ? `
      grpc_ssl_trusted_certificate ${tls.ca};
      grpc_ssl_verify on;
      grpc_ssl_name ${tls.backendName};
      grpc_ssl_session_reuse on;`
          : ""
      }
      grpc_read_timeout 1h;
      grpc_send_timeout 1h;
    }
  }
}
`;
}

/** TLS of the nginx baseline: its certificate towards clients, the CA and name it checks the backend against. */
export interface NginxTls {
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
  readonly backendName: string;
}

/** Starts nginx (`nginx -p <dir> -c <conf> -g 'daemon off;'` equivalent) on `port`; with `tls`, `grpcs://` both ways. */
export async function startNginx(port: number, backend: string, tls?: NginxTls): Promise<Nginx> {
  const dir = await mkdtemp(join(tmpdir(), "bench-nginx-"));
  const conf = join(dir, "nginx.conf");
  await writeFile(conf, nginxConfig(dir, port, backend, tls));
  const child = spawnChild("nginx", "nginx", ["-p", dir, "-c", conf, "-e", join(dir, "error.log")], process.env);
  await waitForPort(child, port, 10_000);
  return {
    port,
    child,
    pids: () => [child.pid, ...childPids(child.pid)],
    async stop() {
      await child.stop(3000);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
