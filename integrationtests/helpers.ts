import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { decodeJwt, decodeProtectedHeader } from "jose";
import type { EchoResponse, LoginResponse, ShutdownResponse } from "../gen/my_service/my_service_pb.js";
import type { MyServiceClient } from "./client.js";
import { CheckFailure, describeError, type LeaseHolder, type ScenarioContext, sleep } from "./context.js";

/** `server_value` every instance returns (SPEC 4.9). */
export const serverValue = "my_service";

/** Exact messages of SPEC section 5. */
export const messages = {
  usernameRequired: "username is required",
  sessionIdRequired: "session_id is required",
  badCredentials: "invalid username or password",
  missingSessionId: "missing session-id",
  invalidToken: "missing or invalid token",
  allBusy: "all instances are busy",
  unavailable: "backend service unavailable",
  sessionNotSet: "Server session is not set",
  sessionMismatch: (client: string, server: string) => `Client session mismatch: client=${client}, server=${server}`,
  sessionConflict: (was: string, now: string) => `Session conflict: was=${was}, now=${now}`,
} as const;

/** Largest clock difference tolerated between this machine and the gateway, seconds. */
const clockSkewS = 300;

/** A logged-in session: its own connection, its token, and the pod it was last seen on. */
export interface TestSession extends LeaseHolder {
  readonly label: string;
  readonly client: MyServiceClient;
  readonly role: string;
  /** `expires_at` of the Login reply, Unix seconds. */
  readonly expiresAt: number;
  /** Echo calls made so far (numbers the step titles). */
  echoes: number;
}

/** The metadata of a MyService* call of `session`. */
export function sessionHeaders(session: { id: string; token: string }): Record<string, string> {
  return { authorization: session.token, "session-id": session.id };
}

/**
 * Logs in on a fresh connection with the configured user and a new unique session id, and
 * checks the reply: token is a JWT with sub/role/session_id/iat/exp, `expires_at` = exp,
 * role as configured (SPEC 4.1).
 */
export async function login(ctx: ScenarioContext, label: string): Promise<TestSession> {
  const id = ctx.sessionId(label);
  const client = ctx.client();
  const { username, password } = ctx.options;
  return ctx.step(
    `Login ${username} (session ${id})`,
    async () => {
      const reply = await client.login({ username, password, sessionId: id }, { timeoutMs: ctx.options.callTimeoutMs });
      const exp = checkLoginReply(reply, { username, sessionId: id, role: ctx.options.role });
      const session: TestSession = {
        id,
        label,
        client,
        token: reply.token,
        role: reply.role,
        expiresAt: exp,
        pod: undefined,
        echoes: 0,
      };
      return session;
    },
    (s) => `→ role ${s.role}, token expires in ${formatSeconds(s.expiresAt - Math.floor(Date.now() / 1000))}`,
  );
}

/** Checks a LoginResponse; returns `exp`. Throws a `CheckFailure` naming the first wrong field. */
export function checkLoginReply(reply: LoginResponse, expected: { username: string; sessionId: string; role: string }): number {
  if (reply.token === "") throw new CheckFailure("empty token", "a JWT", '""');
  let header: ReturnType<typeof decodeProtectedHeader>;
  let claims: ReturnType<typeof decodeJwt>;
  try {
    header = decodeProtectedHeader(reply.token);
    claims = decodeJwt(reply.token);
  } catch (error) {
    throw new CheckFailure("token is not a JWT", "header.payload.signature", `${reply.token.slice(0, 40)}… (${describeError(error)})`);
  }
  if (typeof header.alg !== "string" || !/^(HS256|EdDSA|ES256)$/.test(header.alg)) {
    throw new CheckFailure("token algorithm", "HS256, EdDSA or ES256 (SPEC 4.1, 12)", String(header.alg));
  }
  if (typeof header.kid !== "string" || header.kid === "") {
    throw new CheckFailure("token key id", "a kid in the header (SPEC 12: rotation)", String(header.kid));
  }
  expectEqual("token claim sub", claims.sub, expected.username);
  expectEqual("token claim session_id", claims.session_id, expected.sessionId);
  expectEqual("token claim role", claims.role, reply.role);
  expectEqual("role", reply.role, expected.role);
  const { iat, exp } = claims;
  if (typeof iat !== "number" || typeof exp !== "number") {
    throw new CheckFailure("token claims iat/exp", "numbers", `iat=${String(iat)}, exp=${String(exp)}`);
  }
  const now = Date.now() / 1000;
  if (Math.abs(iat - now) > clockSkewS) {
    throw new CheckFailure("token claim iat is not now", `within ${clockSkewS} s of ${Math.floor(now)}`, String(iat));
  }
  if (exp <= iat || exp <= now) throw new CheckFailure("token already expired", `exp > iat (${iat}) and > now`, String(exp));
  if (reply.expiresAt === undefined) throw new CheckFailure("expires_at missing", `${exp}`, "unset");
  const expiresAt = Number(reply.expiresAt.seconds);
  if (expiresAt !== exp || reply.expiresAt.nanos !== 0) {
    throw new CheckFailure(
      "expires_at differs from the token's exp",
      `${exp} (${new Date(exp * 1000).toISOString()})`,
      `${expiresAt}.${reply.expiresAt.nanos} (${timestampDate(reply.expiresAt).toISOString()})`,
    );
  }
  return exp;
}

/** Options of `echo`. */
export interface EchoOptions {
  /** The pod the reply must come from. */
  readonly expectPod?: string;
  /** A pod the reply must not come from. */
  readonly notPod?: string;
  /** Retry RESOURCE_EXHAUSTED / UNAVAILABLE for up to `capacityWaitMs` (first call of a session). */
  readonly waitForCapacity?: boolean;
  /** Step title; default `Echo #<n>`. */
  readonly title?: string;
}

/**
 * One Echo of `session`, checked field by field (SPEC 4.9), and the pod when one is expected.
 * A successful Echo means the session holds a lease, so it is registered for cleanup.
 */
export async function echo(ctx: ScenarioContext, session: TestSession, options: EchoOptions = {}): Promise<EchoResponse> {
  session.echoes += 1;
  const value = `${session.label}-echo-${session.echoes}-${Math.random().toString(36).slice(2, 8)}`;
  const title = options.title ?? `Echo #${session.echoes} (${session.label})`;
  let waited = { attempts: 1, ms: 0 };
  let transfer: string | undefined;
  const reply = await ctx.step(
    title,
    async () => {
      const call = () =>
        session.client.myServiceEcho(
          { value },
          {
            headers: sessionHeaders(session),
            timeoutMs: ctx.options.callTimeoutMs,
            onHeader: (h) => {
              transfer = describeTransfer(h);
            },
          },
        );
      let result: EchoResponse;
      if (options.waitForCapacity) {
        const out = await retryWhileNoCapacity(ctx, call);
        result = out.value;
        waited = out;
      } else {
        result = await call();
      }
      ctx.leased(session);
      checkEchoReply(result, { value, sessionId: session.id, index: 0, method: "MyServiceEcho" });
      if (options.expectPod !== undefined) expectEqual("pod_name (sticky)", result.podName, options.expectPod);
      if (options.notPod !== undefined && result.podName === options.notPod) {
        throw new CheckFailure("pod_name should differ", `a pod other than ${options.notPod}`, result.podName);
      }
      session.pod = result.podName;
      return result;
    },
    (r) =>
      `→ pod ${r.podName}${waited.attempts > 1 ? ` (waited ${formatMs(waited.ms)} for a free instance, ${waited.attempts} attempts)` : ""}${transfer ? ` (${transfer})` : ""}`,
  );
  return reply;
}

/**
 * The gateway's optional transfer metadata (SPEC 4.8: the response names the old and new
 * instance when a session moved because its instance died), as one line, if present.
 */
export function describeTransfer(headers: Headers): string | undefined {
  const fields: string[] = [];
  headers.forEach((value, name) => {
    if (name.includes("transfer")) fields.push(`${name}: ${value}`);
  });
  return fields.length > 0 ? `transfer ${fields.join(", ")}` : undefined;
}

/** Checks every field of an EchoResponse. */
export function checkEchoReply(reply: EchoResponse, expected: { value: string; sessionId: string; index: number; method: string }): void {
  expectEqual("client_value", reply.clientValue, expected.value);
  expectEqual("server_value", reply.serverValue, serverValue);
  if (reply.podName === "") throw new CheckFailure("pod_name is empty", "a pod name", '""');
  expectEqual("server_session_id", reply.serverSessionId, expected.sessionId);
  expectEqual("client_session_id", reply.clientSessionId, expected.sessionId);
  expectEqual("index", reply.index, expected.index);
  expectEqual("server_method", reply.serverMethod, expected.method);
}

/**
 * Shuts `session` down and checks the reply (pod, session ids, method). The instance then
 * exits and is restarted by its supervisor, so the scenario counts one recycled instance.
 */
export async function shutdown(
  ctx: ScenarioContext,
  session: TestSession,
  options: { expectPod?: string; title?: string } = {},
): Promise<ShutdownResponse> {
  const expectPod = options.expectPod ?? session.pod;
  return ctx.step(
    options.title ?? `Shutdown (${session.label})`,
    async () => {
      const reply = await session.client.myServiceShutdown({}, { headers: sessionHeaders(session), timeoutMs: ctx.options.callTimeoutMs });
      ctx.released(session);
      ctx.recycled += 1;
      checkShutdownReply(reply, { sessionId: session.id, pod: expectPod });
      session.pod = undefined;
      return reply;
    },
    (r) => `→ pod ${r.podName}`,
  );
}

/** Checks every field of a ShutdownResponse. */
export function checkShutdownReply(reply: ShutdownResponse, expected: { sessionId: string; pod: string | undefined }): void {
  if (reply.podName === "") throw new CheckFailure("pod_name is empty", "a pod name", '""');
  if (expected.pod !== undefined) expectEqual("pod_name", reply.podName, expected.pod);
  expectEqual("server_session_id", reply.serverSessionId, expected.sessionId);
  expectEqual("client_session_id", reply.clientSessionId, expected.sessionId);
  expectEqual("index", reply.index, 0);
  expectEqual("server_method", reply.serverMethod, "MyServiceShutdown");
}

/** An open Subscribe stream read message by message with a timeout. */
export interface Subscription {
  readonly value: string;
  /** The next message, or a failure after `timeoutMs`. */
  next(timeoutMs: number): Promise<EchoResponse>;
  /** Cancels the stream (client-side abort). */
  cancel(): void;
  /** Response headers, once received. */
  headers(): Headers | undefined;
}

/** Opens `MyServiceSubscribe` for `session`. */
export function openSubscription(session: TestSession, headers: Record<string, string> = sessionHeaders(session)): Subscription {
  const value = `${session.label}-subscribe-${Math.random().toString(36).slice(2, 8)}`;
  const abort = new AbortController();
  let received: Headers | undefined;
  const stream = session.client.myServiceSubscribe(
    { value },
    {
      headers,
      signal: abort.signal,
      onHeader: (h) => {
        received = h;
      },
    },
  );
  const iterator = stream[Symbol.asyncIterator]();
  return {
    value,
    async next(timeoutMs) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new CheckFailure(`no stream message within ${formatMs(timeoutMs)}`, "a message", "nothing")),
          timeoutMs,
        );
      });
      try {
        const result = await Promise.race([iterator.next(), timeout]);
        if (result.done) throw new CheckFailure("stream ended", "another message", "end of stream (OK status)");
        return result.value;
      } finally {
        clearTimeout(timer);
      }
    },
    cancel() {
      abort.abort();
      // Let the iterator see the abort; its rejection is expected and ignored.
      iterator.return?.().catch(() => {});
    },
    headers: () => received,
  };
}

/** Reads one Subscribe message as a step and checks every field. */
export async function expectStreamMessage(
  ctx: ScenarioContext,
  session: TestSession,
  sub: Subscription,
  expected: { index: number; pod?: string; timeoutMs: number; title?: string },
): Promise<EchoResponse> {
  return ctx.step(
    expected.title ?? `Subscribe message index ${expected.index}`,
    async () => {
      const message = await sub.next(expected.timeoutMs);
      ctx.leased(session);
      checkEchoReply(message, { value: sub.value, sessionId: session.id, index: expected.index, method: "MyServiceSubscribe" });
      if (expected.pod !== undefined) expectEqual("pod_name (one pod per stream)", message.podName, expected.pod);
      session.pod = message.podName;
      return message;
    },
    (m) => `→ pod ${m.podName}`,
  );
}

/**
 * Calls `call` until it stops failing with RESOURCE_EXHAUSTED / UNAVAILABLE (instances still
 * recycling after an earlier Shutdown), for at most `capacityWaitMs`.
 */
export async function retryWhileNoCapacity<T>(
  ctx: ScenarioContext,
  call: () => Promise<T>,
): Promise<{ value: T; attempts: number; ms: number }> {
  const started = Date.now();
  for (let attempts = 1; ; attempts++) {
    try {
      return { value: await call(), attempts, ms: Date.now() - started };
    } catch (error) {
      const retryable = error instanceof ConnectError && (error.code === Code.ResourceExhausted || error.code === Code.Unavailable);
      if (!retryable || Date.now() - started >= ctx.options.capacityWaitMs) {
        if (retryable) {
          throw new CheckFailure(
            `no free instance within ${formatMs(ctx.options.capacityWaitMs)} (${attempts} attempts)`,
            "a free instance",
            describeError(error),
          );
        }
        throw error;
      }
      await sleep(250);
    }
  }
}

/** Throws a `CheckFailure` unless `actual === expected`. */
export function expectEqual<T>(what: string, actual: T, expected: T): void {
  if (actual !== expected) throw new CheckFailure(`${what} is wrong`, JSON.stringify(expected), JSON.stringify(actual));
}

/** Throws a `CheckFailure` with `message` unless `condition` holds. */
export function expectThat(condition: boolean, message: string, expected?: string, received?: string): void {
  if (!condition) throw new CheckFailure(message, expected, received);
}

/** A stream wait bound: a few intervals plus slack (the dev stack's interval is 5 s). */
export function streamMessageTimeoutMs(ctx: ScenarioContext, intervals = 1): number {
  return intervals * ctx.options.subscribeIntervalMs + 10_000;
}

/** `1.2 s` / `340 ms`. */
export function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

function formatSeconds(s: number): string {
  if (s % 3600 === 0 || s > 3590) return `${Math.round(s / 360) / 10}h`.replace(".0h", "h");
  if (s >= 60) return `${Math.round(s / 6) / 10}m`.replace(".0m", "m");
  return `${s}s`;
}

/**
 * Opens `MyServiceSubscribe` for `session` and checks its first message (index 0, at once).
 * With `waitForCapacity`, reopens the stream while the gateway answers RESOURCE_EXHAUSTED /
 * UNAVAILABLE (instances still recycling). The caller cancels the returned stream.
 */
export async function subscribe(
  ctx: ScenarioContext,
  session: TestSession,
  options: { title?: string; waitForCapacity?: boolean; expectPod?: string } = {},
): Promise<{ sub: Subscription; first: EchoResponse }> {
  let waited = { attempts: 1, ms: 0 };
  return ctx.step(
    options.title ?? `Subscribe (${session.label}): first message at once`,
    async () => {
      const open = async () => {
        const sub = openSubscription(session);
        try {
          return { sub, first: await sub.next(ctx.options.callTimeoutMs) };
        } catch (error) {
          sub.cancel();
          throw error;
        }
      };
      let opened: { sub: Subscription; first: EchoResponse };
      if (options.waitForCapacity) {
        const out = await retryWhileNoCapacity(ctx, open);
        opened = out.value;
        waited = out;
      } else {
        opened = await open();
      }
      ctx.leased(session);
      try {
        checkEchoReply(opened.first, { value: opened.sub.value, sessionId: session.id, index: 0, method: "MyServiceSubscribe" });
        if (options.expectPod !== undefined) expectEqual("pod_name (sticky)", opened.first.podName, options.expectPod);
      } catch (error) {
        opened.sub.cancel();
        throw error;
      }
      session.pod = opened.first.podName;
      return opened;
    },
    ({ first }) =>
      `→ index 0 from pod ${first.podName}${waited.attempts > 1 ? ` (waited ${formatMs(waited.ms)} for a free instance, ${waited.attempts} attempts)` : ""}`,
  );
}

/** The three proxied methods, for checks that must hold on each. */
export type ProxiedMethod = "MyServiceEcho" | "MyServiceSubscribe" | "MyServiceShutdown";

/** All proxied methods in contract order. */
export const proxiedMethods: readonly ProxiedMethod[] = ["MyServiceEcho", "MyServiceSubscribe", "MyServiceShutdown"];

/**
 * Calls `method` with exactly `headers` (no defaults added) and resolves with the reply (for
 * Subscribe: the first message, then the stream is cancelled). For checks that expect errors.
 */
export async function callWithHeaders(
  ctx: ScenarioContext,
  client: MyServiceClient,
  method: ProxiedMethod,
  headers: Record<string, string>,
): Promise<unknown> {
  const timeoutMs = ctx.options.callTimeoutMs;
  // A call expected to fail may succeed (that is what the check is for): then the session
  // holds a lease, and cleanup must shut it down.
  const holder = (pod: string): LeaseHolder | undefined => {
    const id = headers["session-id"];
    const token = headers.authorization;
    return id && token ? { id, token: token.replace(/^bearer\s+/i, ""), pod } : undefined;
  };
  switch (method) {
    case "MyServiceEcho": {
      const reply = await client.myServiceEcho({ value: "it-auth-check" }, { headers, timeoutMs });
      const lease = holder(reply.podName);
      if (lease) ctx.leased(lease);
      return reply;
    }
    case "MyServiceShutdown":
      return client.myServiceShutdown({}, { headers, timeoutMs });
    case "MyServiceSubscribe": {
      const abort = new AbortController();
      try {
        for await (const message of client.myServiceSubscribe({ value: "it-auth-check" }, { headers, timeoutMs, signal: abort.signal })) {
          const lease = holder(message.podName);
          if (lease) ctx.leased(lease);
          return message;
        }
        return undefined;
      } finally {
        abort.abort();
      }
    }
  }
}
