// Raw HTTP/2 and TCP clients for the bad-input suites: full control over headers and bytes.
import * as http2 from "node:http2";
import * as net from "node:net";
import { SignJWT } from "jose";

/** What happened to one raw call: a gRPC status, an RST_STREAM, a session error, or a timeout. */
export interface RawResult {
  status?: number;
  grpcStatus?: number;
  grpcMessage?: string;
  rstCode?: number;
  error?: string;
  timedOut?: boolean;
  body: Buffer;
}

/** A gRPC frame: flag 0, big-endian length, payload. */
export function grpcFrame(payload: Uint8Array, declaredLength = payload.length): Buffer {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(declaredLength >>> 0, 1);
  return Buffer.concat([prefix, payload]);
}

/** Protobuf of `EchoRequest { value }` (field 1, string), enough for raw calls. */
export function echoRequest(value: string): Buffer {
  const v = Buffer.from(value);
  const len: number[] = [];
  let n = v.length;
  do {
    len.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n >>>= 7;
  } while (n > 0);
  return Buffer.concat([Buffer.from([0x0a, ...len]), v]);
}

/**
 * One gRPC call over a fresh (or given) HTTP/2 session with exactly `headers` and `body`
 * chunks; `chunkDelayMs` sends them slowly. Never throws: every end is reported.
 */
export function rawCall(
  target: string | http2.ClientHttp2Session,
  path: string,
  headers: Record<string, string | string[]>,
  body: readonly Buffer[],
  options: { timeoutMs?: number; chunkDelayMs?: number; settings?: http2.Settings } = {},
): Promise<RawResult> {
  return new Promise((resolve) => {
    const own = typeof target === "string";
    const session = own ? http2.connect(target, { settings: options.settings, maxSendHeaderBlockLength: 64 << 20 }) : target;
    const result: RawResult = { body: Buffer.alloc(0) };
    const chunks: Buffer[] = [];
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      result.body = Buffer.concat(chunks);
      if (own) session.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => {
      result.timedOut = true;
      finish();
    }, options.timeoutMs ?? 10_000);
    session.on("error", (e) => {
      result.error ??= String(e);
      finish();
    });
    session.on("goaway", (code) => {
      result.error ??= `goaway ${code}`;
    });
    let req: http2.ClientHttp2Stream;
    try {
      req = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...headers });
    } catch (e) {
      result.error = String(e);
      finish();
      return;
    }
    req.on("response", (h) => {
      result.status = Number(h[":status"]);
      if (h["grpc-status"] !== undefined) {
        result.grpcStatus = Number(h["grpc-status"]);
        result.grpcMessage = decodeURIComponent(String(h["grpc-message"] ?? ""));
      }
    });
    req.on("trailers", (t) => {
      result.grpcStatus = Number(t["grpc-status"]);
      result.grpcMessage = decodeURIComponent(String(t["grpc-message"] ?? ""));
    });
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("error", (e) => {
      result.error ??= String(e);
    });
    req.on("close", () => {
      if (req.rstCode !== undefined && req.rstCode !== 0) result.rstCode = req.rstCode;
      finish();
    });
    void (async () => {
      for (const chunk of body) {
        if (done || req.destroyed) return;
        req.write(chunk);
        if (options.chunkDelayMs) await new Promise((r) => setTimeout(r, options.chunkDelayMs));
      }
      if (!req.destroyed) req.end();
    })();
  });
}

/** Sends `bytes` on a plain TCP connection; resolves with what came back and how it ended. */
export function rawSocket(
  port: number,
  bytes: readonly Buffer[],
  options: { timeoutMs?: number; delayMs?: number; end?: boolean } = {},
): Promise<{ reply: string; closedByServer: boolean; ms: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = net.connect(port, "127.0.0.1");
    let reply = "";
    let settled = false;
    const done = (closedByServer: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ reply, closedByServer, ms: Date.now() - started });
    };
    const timer = setTimeout(() => done(false), options.timeoutMs ?? 10_000);
    socket.on("data", (c) => {
      if (reply.length < 4096) reply += c.toString("latin1");
    });
    socket.on("error", () => done(true));
    socket.on("close", () => done(true));
    socket.on("connect", async () => {
      for (const b of bytes) {
        if (settled || socket.destroyed) return;
        socket.write(b);
        if (options.delayMs) await new Promise((r) => setTimeout(r, options.delayMs));
      }
      if (options.end) socket.end();
    });
  });
}

const enc = (o: unknown) => Buffer.from(typeof o === "string" ? o : JSON.stringify(o)).toString("base64url");

/** A JWT with arbitrary header and payload, HMAC-signed with `alg` (or the given signature). */
export async function forgeToken(
  header: Record<string, unknown>,
  payload: Record<string, unknown> | string,
  key: string | undefined,
  signature?: string,
): Promise<string> {
  const head = `${enc(header)}.${enc(payload)}`;
  if (signature !== undefined || key === undefined) return `${head}.${signature ?? ""}`;
  const alg = String(header.alg);
  const hash = { HS256: "sha256", HS384: "sha384", HS512: "sha512" }[alg] ?? "sha256";
  const { createHmac } = await import("node:crypto");
  return `${head}.${createHmac(hash, key).update(head).digest("base64url")}`;
}

/** A valid HS256 token through jose with the given claims (for tampering). */
export async function joseToken(secret: string, claims: Record<string, unknown>): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: "HS256", typ: "JWT" }).sign(new TextEncoder().encode(secret));
}
