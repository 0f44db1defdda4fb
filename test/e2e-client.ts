import assert from "node:assert/strict";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { type Client, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { RetryInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { type EchoResponse, MyServiceAPI } from "../gen/my_service/my_service_pb.js";

/** A native gRPC client of the gateway on its own HTTP/2 connection. */
export interface GatewayClient {
  readonly api: Client<typeof MyServiceAPI>;
  close(): void;
}

export function gatewayClient(baseUrl: string): GatewayClient {
  const sessionManager = new Http2SessionManager(baseUrl);
  return {
    api: createClient(MyServiceAPI, createGrpcTransport({ baseUrl, sessionManager })),
    close: () => sessionManager.abort(),
  };
}

/** A logged-in session: its id, token and metadata. */
export interface Session {
  readonly id: string;
  readonly token: string;
  readonly headers: Record<string, string>;
}

let counter = 0;

/** Logs in `TestUser` with a fresh session id. */
export async function login(client: GatewayClient, label = "s", username = "TestUser", password = "TestPassword"): Promise<Session> {
  const id = `${label}-${process.pid}-${++counter}-${Math.random().toString(36).slice(2, 8)}`;
  const reply = await client.api.login({ username, password, sessionId: id });
  return { id, token: reply.token, headers: { authorization: reply.token, "session-id": id } };
}

/** Echo with the session's metadata; also returns the response headers (transfer metadata). */
export async function echo(client: GatewayClient, session: Session, value = "v"): Promise<EchoResponse & { responseHeaders: Headers }> {
  let responseHeaders = new Headers();
  const reply = await client.api.myServiceEcho(
    { value },
    {
      headers: session.headers,
      timeoutMs: 10_000,
      onHeader: (h) => {
        responseHeaders = h;
      },
    },
  );
  return Object.assign(reply, { responseHeaders });
}

/** The gRPC error a call fails with; throws if it succeeds. */
export async function errorOf(call: Promise<unknown>): Promise<{ code: number; message: string; metadata: Headers; error: ConnectError }> {
  try {
    await call;
  } catch (error) {
    if (error instanceof ConnectError) return { code: error.code, message: error.rawMessage, metadata: error.metadata, error };
    throw error;
  }
  throw new Error("expected the call to fail, it succeeded");
}

/**
 * Asserts the retry hint of a refusal: a `google.rpc.RetryInfo` in the status details and the
 * same delay in `retry-after-ms`. Returns the delay, milliseconds.
 */
export function retryHintOf(refusal: { metadata: Headers; error: ConnectError }): number {
  const [info] = refusal.error.findDetails(RetryInfoSchema);
  assert.ok(info?.retryDelay, "a google.rpc.RetryInfo in the status details");
  const ms = durationMs(info.retryDelay);
  assert.ok(ms > 0, `retry delay ${ms} ms`);
  assert.equal(refusal.metadata.get("retry-after-ms"), String(ms));
  return ms;
}

/** Retries `fn` while it fails with one of `codes` (e.g. while instances recycle), up to `timeoutMs`. */
export async function retryWhile<T>(codes: readonly number[], fn: () => Promise<T>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (error) {
      if (!(error instanceof ConnectError) || !codes.includes(error.code) || Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
