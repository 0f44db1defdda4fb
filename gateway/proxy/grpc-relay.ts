import { type ClientHttp2Stream, constants, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import { Code } from "@connectrpc/connect";
import type { Logger } from "../../common/logger.js";
import { GatewayError, grpcStatusOf, messages, retryTrailers } from "../errors.js";
import type { LeaseKeeper } from "../leases/lease-keeper.js";
import type { Lease } from "../leases/lease-store.js";
import type { InstancePool } from "../pool/instance-pool.js";
import { queueHeaders, waitFromHeader } from "../queue/wait-header.js";
import type { QueueTicket } from "../queue/waiting-room.js";
import {
  type Caller,
  type ProxiedMethod,
  type Route,
  type SessionRouter,
  type Transfer,
  transferHeaders,
} from "../routing/session-router.js";
import { decodeGrpcMessage, encodeGrpcMessage, GrpcFrameMeter } from "./grpc-frames.js";
import type { UpstreamPool } from "./upstream-pool.js";

/** Paths the relay serves, by method. */
export const relayedPaths: ReadonlyMap<string, ProxiedMethod> = new Map([
  ["/my_service.MyServiceAPI/MyServiceEcho", "MyServiceEcho"],
  ["/my_service.MyServiceAPI/MyServiceSubscribe", "MyServiceSubscribe"],
  ["/my_service.MyServiceAPI/MyServiceShutdown", "MyServiceShutdown"],
]);

/** True for a native gRPC request (not gRPC-Web, not Connect) the relay can take. */
export function isNativeGrpc(headers: IncomingHttpHeaders): boolean {
  const type = headers["content-type"];
  return (
    typeof type === "string" &&
    type.startsWith("application/grpc") &&
    !type.startsWith("application/grpc-web") &&
    headers[":method"] === "POST"
  );
}

/** Options of `createGrpcRelay`. */
export interface GrpcRelayOptions {
  readonly router: SessionRouter;
  readonly pool: InstancePool;
  readonly upstream: UpstreamPool;
  readonly keeper: LeaseKeeper;
  /** Largest message either way, bytes (SPEC 4.4). */
  readonly maxMessageBytes: number;
  readonly logger: Logger;
  /** Observes every finished call (metrics). `code` is the gRPC status sent, -1 if the client went away. */
  readonly onCallEnd?: (method: ProxiedMethod, code: number, durationMs: number) => void;
}

const noop = () => {};
const deadlineReason = new GatewayError(Code.DeadlineExceeded, "deadline exceeded");
const cancelReason = new GatewayError(Code.Canceled, "call cancelled");
const cancel = constants.NGHTTP2_CANCEL;
let requestCounter = 0;
const requestPrefix = Math.random().toString(36).slice(2, 8);

/**
 * Relays native gRPC calls of MyServiceAPI to the session's instance without decoding
 * messages: routing needs only the headers (session-id, authorization). HEADERS, DATA and
 * trailers are passed through with flow control; messages are only measured against the size
 * limit. A call whose instance died before answering is moved and replayed once; an open
 * Subscribe continues from the new instance (SPEC 4.8).
 */
export function createGrpcRelay(
  options: GrpcRelayOptions,
): (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, method: ProxiedMethod) => void {
  return (stream, headers, method) => {
    new RelayCall(options, stream, headers, method).start();
  };
}

class RelayCall {
  private readonly startedAt = performance.now();
  private readonly requestId: string;
  private readonly deadlineAt: number | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private caller: Caller | undefined;
  private transfer: Transfer | undefined;
  /** The call waited in the queue (SPEC 11): its response headers say so. */
  private queued: QueueTicket | undefined;
  /** Set while the call may wait in the queue: aborted when the call ends. */
  private waitAbort: AbortController | undefined;
  /** The lease the queue granted this call: given back if the call goes away before its response. */
  private grantedLease: Lease | undefined;
  private transferred = false;
  /** The request body so far: kept whole for one replay (at most the message limit). */
  private readonly requestChunks: Buffer[] = [];
  private requestBytes = 0;
  private requestEnded = false;
  /** The instance to call once the request is complete (see `attempt`). */
  private waitingFor: Lease | undefined;
  private readonly requestMeter: GrpcFrameMeter;
  private responseMeter: GrpcFrameMeter;
  private up: ClientHttp2Stream | undefined;
  private upTrailers: IncomingHttpHeaders | undefined;
  /**
   * Response DATA of the current upstream stream that arrived before its `response` event.
   * Node emits `response` on the next tick but `data` at once, so when HEADERS and DATA come
   * in one read (typical over TLS) the data is first; written before the response headers, it
   * would make node answer the client with a bare `:status 200` of its own. Made only when
   * that happens (rarely), not per call.
   */
  private earlyData: Buffer[] | undefined;
  /** The current upstream stream's `response` event has not come yet. */
  private awaitingResponse = false;
  private responded = false;
  private finished = false;
  private pendingTrailers: OutgoingHttpHeaders | undefined;
  private streamCounted = false;

  constructor(
    private readonly o: GrpcRelayOptions,
    private readonly stream: ServerHttp2Stream,
    private readonly headers: IncomingHttpHeaders,
    private readonly method: ProxiedMethod,
  ) {
    const given = headers["x-request-id"];
    this.requestId = typeof given === "string" && given.length <= 128 ? given : `${requestPrefix}-${++requestCounter}`;
    this.requestMeter = new GrpcFrameMeter(o.maxMessageBytes);
    this.responseMeter = new GrpcFrameMeter(o.maxMessageBytes);
    const timeout = parseGrpcTimeout(headers["grpc-timeout"]);
    this.deadlineAt = timeout === undefined ? undefined : this.startedAt + timeout;
  }

  start(): void {
    const { stream } = this;
    stream.on("error", noop);
    stream.on("close", () => this.onClientClose());
    stream.on("data", (chunk: Buffer) => this.onClientData(chunk));
    stream.on("end", () => {
      this.requestEnded = true;
      // The upstream stream is opened only now (see `attempt`), with the whole request.
      const lease = this.waitingFor;
      this.waitingFor = undefined;
      if (lease !== undefined) this.attempt(lease);
    });
    stream.on("wantTrailers", () => {
      stream.sendTrailers(this.pendingTrailers ?? { "grpc-status": String(Code.Internal), "grpc-message": messages.internal });
    });
    if (this.deadlineAt !== undefined) {
      const ms = Math.max(0, this.deadlineAt - performance.now());
      this.deadlineTimer = setTimeout(() => this.fail(Code.DeadlineExceeded, "deadline exceeded"), ms);
    }
    try {
      const caller = this.o.router.authenticate(single(this.headers["session-id"]), single(this.headers.authorization));
      this.routeAndSend(caller);
    } catch (error) {
      this.failWith(error);
    }
  }

  private routeAndSend(caller: Caller): void {
    if (this.finished) return;
    this.caller = caller;
    try {
      const waitMs = this.method === "MyServiceShutdown" ? undefined : waitFromHeader(this.headers[queueHeaders.wait]);
      let wait: Parameters<SessionRouter["route"]>[2];
      if (waitMs !== undefined) {
        this.waitAbort = new AbortController();
        const deadlineMs = this.deadlineAt === undefined ? undefined : this.deadlineAt - performance.now();
        wait = { requestedMs: waitMs, deadlineMs, signal: this.waitAbort.signal };
      }
      const route = this.o.router.route(this.method, caller, wait);
      if (route instanceof Promise)
        route.then(
          (r) => this.send(caller, r),
          (e) => this.failWith(e),
        );
      else this.send(caller, route);
    } catch (error) {
      this.failWith(error);
    }
  }

  private send(caller: Caller, { lease, transfer, queued }: Route): void {
    if (this.finished) {
      // The call went away while it waited and its grant arrived at the same moment.
      if (queued !== undefined) void this.o.router.abandonGrant(lease);
      return;
    }
    this.queued = queued;
    if (queued !== undefined) this.grantedLease = lease;
    if (transfer !== undefined) {
      this.transfer = transfer;
      this.log().info({ from: transfer.fromPod, to: transfer.toPod, reason: transfer.reason }, "session moved to a new instance");
    }
    if (this.method === "MyServiceSubscribe") {
      this.o.keeper.streamOpened(caller.sessionId);
      this.streamCounted = true;
    }
    this.attempt(lease);
  }

  private attempt(lease: Lease): void {
    if (this.finished) return;
    if (!this.requestEnded) {
      // Every relayed method takes exactly one request message and the client half-closes
      // after it; the instance cannot answer before. Opening the upstream stream once the
      // request is complete sends HEADERS, DATA and END_STREAM in one write (one wake-up of
      // the instance instead of two).
      this.waitingFor = lease;
      return;
    }
    // A lease created after this gateway's last failed probe is on an instance the store saw
    // come back (another gateway probed it first): it is tried, not taken for dead.
    if (this.o.pool.isDown(lease.instanceAddress, lease.createdAt)) {
      void this.onUpstreamFailure(lease, "gone");
      return;
    }
    let conn: ReturnType<UpstreamPool["get"]>;
    try {
      conn = this.o.upstream.get(lease.instanceAddress);
    } catch (error) {
      this.failWith(error);
      return;
    }
    if (conn.bootId === undefined) {
      this.o.pool.identify(conn).then(
        () => this.attempt(lease),
        () => void this.onUpstreamFailure(lease, undefined),
      );
      return;
    }
    if (lease.instanceBootId !== "" && conn.bootId !== lease.instanceBootId) {
      // The process behind the address restarted: the session's state is gone (SPEC 4.7).
      void this.onUpstreamFailure(lease, "gone");
      return;
    }
    const out: OutgoingHttpHeaders = {};
    for (const key in this.headers) {
      if (key.charCodeAt(0) === 58 /* ':' */ || key === "connection" || key === "host" || key === "grpc-timeout") continue;
      out[key] = this.headers[key];
    }
    out[":method"] = "POST";
    out[":path"] = this.headers[":path"];
    out[":scheme"] = "http";
    out[":authority"] = lease.instanceAddress;
    out["x-request-id"] = this.requestId;
    if (this.deadlineAt !== undefined) {
      out["grpc-timeout"] = `${Math.max(1, Math.ceil(this.deadlineAt - performance.now()))}m`;
    }
    let up: ClientHttp2Stream;
    try {
      up = conn.session.request(out);
    } catch {
      void this.onUpstreamFailure(lease, undefined);
      return;
    }
    this.up = up;
    conn.active++;
    up.once("close", () => conn.active--);
    this.upTrailers = undefined;
    this.awaitingResponse = true;
    this.earlyData = undefined;
    this.responseMeter = new GrpcFrameMeter(this.o.maxMessageBytes);
    up.on("error", noop);
    up.on("response", (h) => this.onUpstreamResponse(up, h));
    up.on("data", (chunk: Buffer) => this.onUpstreamData(up, chunk));
    up.on("trailers", (t) => {
      if (up === this.up) this.upTrailers = t;
    });
    up.on("close", () => this.onUpstreamClose(up, lease));
    // end() in the same tick as the write: the last DATA frame carries END_STREAM.
    const chunks = this.requestChunks;
    up.end(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
  }

  private onClientData(chunk: Buffer): void {
    if (this.finished) return;
    const oversized = this.requestMeter.push(chunk);
    this.requestBytes += chunk.length;
    if (oversized !== undefined || this.requestBytes > this.o.maxMessageBytes + 5) {
      this.fail(
        Code.ResourceExhausted,
        `request message larger than max (${oversized ?? this.requestBytes} vs. ${this.o.maxMessageBytes})`,
      );
      return;
    }
    // Kept whole until the request ends (one message, at most the limit): only then is the
    // upstream stream opened (`attempt`), and a replay sends it again.
    this.requestChunks.push(chunk);
  }

  private onUpstreamResponse(up: ClientHttp2Stream, h: IncomingHttpHeaders): void {
    if (up !== this.up || this.finished) return;
    this.awaitingResponse = false;
    const early = this.earlyData;
    this.earlyData = undefined;
    if (h["grpc-status"] !== undefined) {
      // Trailers-only response: the status came in the first header block.
      this.upTrailers = h;
      return;
    }
    if (this.responded) {
      // A Subscribe continuing on a new instance: its response headers were sent already.
      this.writeResponseData(up, early);
      return;
    }
    if (this.stream.headersSent || this.stream.destroyed) {
      // Never expected (only this call answers its stream; early data waits for this event): a
      // safety net, since a throw here would take the whole gateway down. End this call instead.
      this.log().error(
        { headersSent: this.stream.headersSent, destroyed: this.stream.destroyed, transferred: this.transferred },
        "relay: the client's stream was answered already; call ended",
      );
      this.fail(Code.Internal, messages.internal);
      return;
    }
    const out: OutgoingHttpHeaders = { ":status": 200 };
    for (const key in h) {
      if (key.charCodeAt(0) === 58 || key === "content-length" || key === "date") continue;
      out[key] = h[key];
    }
    this.addTransfer(out);
    this.addQueued(out);
    this.responded = true;
    this.stream.respond(out, { waitForTrailers: true });
    this.writeResponseData(up, early);
  }

  private onUpstreamData(up: ClientHttp2Stream, chunk: Buffer): void {
    if (up !== this.up || this.finished) return;
    const oversized = this.responseMeter.push(chunk);
    if (oversized !== undefined) {
      this.fail(Code.ResourceExhausted, `response message larger than max (${oversized} vs. ${this.o.maxMessageBytes})`);
      return;
    }
    if (this.awaitingResponse) {
      // Before the `response` event (see `earlyData`): kept until the headers are sent.
      if (this.earlyData === undefined) this.earlyData = [chunk];
      else this.earlyData.push(chunk);
      return;
    }
    this.writeResponseData(up, [chunk]);
  }

  private writeResponseData(up: ClientHttp2Stream, chunks: readonly Buffer[] | undefined): void {
    if (chunks === undefined || chunks.length === 0 || this.finished || this.stream.destroyed) return;
    let full = false;
    for (const chunk of chunks) full = !this.stream.write(chunk) || full;
    if (full) {
      up.pause();
      this.stream.once("drain", () => up.resume());
    }
  }

  private onUpstreamClose(up: ClientHttp2Stream, lease: Lease): void {
    if (up !== this.up || this.finished) return;
    this.up = undefined;
    const trailers = this.upTrailers;
    const status = trailers?.["grpc-status"];
    if (typeof status !== "string") {
      void this.onUpstreamFailure(lease, undefined);
      return;
    }
    const code = Number(status);
    const out: OutgoingHttpHeaders = {};
    for (const key in trailers) {
      if (key.charCodeAt(0) === 58 || key === "content-type" || key === "content-length" || key === "date") continue;
      out[key] = trailers[key];
    }
    if (
      this.method === "MyServiceShutdown" &&
      (code === 0 ||
        (code === Code.PermissionDenied && decodeGrpcMessage(trailers?.["grpc-message"] as string | undefined) === messages.sessionNotSet))
    ) {
      // SPEC 4.5: a successful Shutdown releases the lease. So does an instance that holds no
      // session at all (the session's first call never reached it): the lease is empty. The
      // reply waits for the release, so the session's next call finds no lease.
      void this.o.router.releaseAfterShutdown(lease).then(() => this.endWith(out, code));
      return;
    }
    this.endWith(out, code);
  }

  /**
   * The instance could not be reached or the connection broke before the call completed.
   * If the session's process is gone, move the session once and replay (SPEC 4.8).
   */
  private async onUpstreamFailure(lease: Lease, known: "gone" | undefined): Promise<void> {
    if (this.finished) return;
    const replayable = !this.transferred && (!this.responded || this.method === "MyServiceSubscribe");
    const diagnosis = known ?? (await this.o.pool.diagnose(lease.instanceAddress, lease.instanceBootId));
    if (this.finished) return;
    if (diagnosis === "same" || !replayable || this.caller === undefined) {
      this.log().warn({ pod: lease.podName, diagnosis }, "instance unreachable");
      this.fail(Code.Unavailable, messages.unavailable);
      return;
    }
    if (this.method === "MyServiceShutdown") {
      // Nothing to shut down any more: the session's instance is gone. Release its lease.
      await this.o.router.releaseAfterShutdown(lease);
      this.fail(Code.Unavailable, messages.unavailable);
      return;
    }
    try {
      const moved = await this.o.router.transfer(this.caller, lease, "instance-lost");
      if (this.finished) return;
      this.transferred = true;
      this.transfer = moved.transfer;
      this.log().warn({ from: moved.transfer.fromPod, to: moved.transfer.toPod }, "instance lost; session moved and call replayed");
      this.attempt(moved.lease);
    } catch (error) {
      this.log().warn({ pod: lease.podName, known, err: error }, "instance lost; the session could not be moved");
      this.failWith(error);
    }
  }

  private addQueued(out: OutgoingHttpHeaders): void {
    const q = this.queued;
    if (q === undefined) return;
    out[queueHeaders.waitMs] = String(Math.round(q.waitedMs));
    out[queueHeaders.position] = String(q.position);
  }

  private addTransfer(out: OutgoingHttpHeaders): void {
    const t = this.transfer;
    if (t === undefined) return;
    out[transferHeaders.from] = t.fromPod;
    out[transferHeaders.to] = t.toPod;
    out[transferHeaders.reason] = t.reason;
  }

  private failWith(error: unknown): void {
    const { code, message } = grpcStatusOf(error);
    if (code === Code.Internal) this.log().error({ err: error }, "call failed");
    if (error instanceof GatewayError) this.fail(code, message, error.retryAfterMs, error.metadata);
    else this.fail(code, message);
  }

  /** Ends the call with a status of the gateway's own; cancels the upstream stream. */
  private fail(code: Code, message: string, retryAfterMs?: number, metadata?: Readonly<Record<string, string>>): void {
    if (this.finished) return;
    const up = this.up;
    this.up = undefined;
    if (up !== undefined && !up.destroyed) up.close(cancel);
    const out: OutgoingHttpHeaders = { "grpc-status": String(code), "grpc-message": encodeGrpcMessage(message) };
    if (retryAfterMs !== undefined) Object.assign(out, retryTrailers(code, message, retryAfterMs));
    if (metadata !== undefined) Object.assign(out, metadata);
    this.endWith(out, code);
  }

  /**
   * Ends the client's call with `trailers`: as a trailers-only response while nothing was sent
   * yet, else after the messages. Names a transfer the response headers could not name.
   */
  private endWith(trailers: OutgoingHttpHeaders, code: number): void {
    if (!this.responded || this.transferred) this.addTransfer(trailers);
    if (!this.responded) this.addQueued(trailers);
    if (!this.responded) {
      this.endTrailersOnly(trailers, code);
      return;
    }
    this.pendingTrailers = trailers;
    this.finish(code);
    if (!this.stream.destroyed) this.stream.end();
  }

  private endTrailersOnly(out: OutgoingHttpHeaders, code: number): void {
    this.finish(code);
    if (this.stream.destroyed) return;
    if (this.stream.headersSent) {
      // Headers went out without trailers to follow: no status can be sent any more. Reset the
      // stream so that the client fails at once instead of waiting for an end that never comes.
      this.stream.close(constants.NGHTTP2_INTERNAL_ERROR);
      return;
    }
    out[":status"] = 200;
    out["content-type"] = "application/grpc";
    this.stream.respond(out, { endStream: true });
  }

  private onClientClose(): void {
    if (this.finished) return;
    // The client cancelled (RST_STREAM) or went away: end the upstream stream at once (SPEC 4.4).
    const up = this.up;
    this.up = undefined;
    if (up !== undefined && !up.destroyed) up.close(cancel);
    this.finish(-1);
  }

  private finish(code: number): void {
    if (this.finished) return;
    this.finished = true;
    if (this.deadlineTimer !== undefined) clearTimeout(this.deadlineTimer);
    // A call still waiting in the queue leaves it now (SPEC 11); after its grant this does nothing.
    this.waitAbort?.abort(code === Code.DeadlineExceeded ? deadlineReason : cancelReason);
    // A granted waiter that went away before its answer was complete (an Echo before its
    // trailers, a Subscribe before its first message) never got the instance: it is given back.
    const unanswered = this.method === "MyServiceEcho" || !this.responded;
    if (this.grantedLease !== undefined && unanswered && (code === -1 || code === Code.DeadlineExceeded)) {
      void this.o.router.abandonGrant(this.grantedLease);
    }
    if (this.streamCounted && this.caller !== undefined) this.o.keeper.streamClosed(this.caller.sessionId);
    this.o.onCallEnd?.(this.method, code, performance.now() - this.startedAt);
  }

  private log(): Logger {
    return this.o.logger.child({ requestId: this.requestId, sessionId: this.caller?.sessionId, method: this.method });
  }
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** Parses `grpc-timeout` (e.g. `500m`, `10S`) to milliseconds; `undefined` when absent or malformed. */
export function parseGrpcTimeout(value: string | string[] | undefined): number | undefined {
  if (typeof value !== "string") return undefined;
  const match = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (match === null) return undefined;
  const n = Number(match[1]);
  const unitMs = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 }[match[2] as "H"];
  return n * unitMs;
}
