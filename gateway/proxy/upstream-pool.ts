import { type ClientHttp2Session, connect, constants } from "node:http2";
import { cleartextUpstream, type UpstreamTls } from "./upstream-tls.js";

/** Options of `UpstreamPool`. */
export interface UpstreamPoolOptions {
  /** HTTP/2 connections kept per instance; calls are spread over them. Default 2. */
  readonly connectionsPerInstance?: number;
  /** A connection not established within this bound is destroyed, milliseconds. Default 2000. */
  readonly connectTimeoutMs?: number;
  /**
   * Another connection is opened only while every pooled one carries at least this many relayed
   * streams. Default 32: fewer, fuller connections cost both sides less per call (one read or
   * write carries more frames); more connections did not raise throughput here.
   */
  readonly streamsBeforeNewConnection?: number;
  /** Cleartext (default) or TLS to instances. */
  readonly tls?: UpstreamTls;
}

/** One pooled HTTP/2 connection to an instance. */
export interface UpstreamConnection {
  readonly address: string;
  readonly session: ClientHttp2Session;
  /** Resolves once connected; rejects if the connection fails first. */
  readonly connected: Promise<void>;
  /** True once the HTTP/2 handshake finished. */
  readonly isConnected: () => boolean;
  /** Boot id of the process behind this connection, once identified (see `InstancePool.identify`). */
  bootId?: string;
  /** The identification in progress or done. */
  identity?: Promise<string>;
  /** Relayed streams open on this connection (counted by the relay). */
  active: number;
}

/** Error of a connection that could not be established; `refused` means nothing listens there. */
export class ConnectFailure extends Error {
  override readonly name = "ConnectFailure";
  constructor(
    message: string,
    readonly refused: boolean,
  ) {
    super(message);
  }
}

/**
 * Keeps a small set of HTTP/2 sessions per instance address and hands them out round robin.
 * Dead sessions (closed, errored, GOAWAY) leave the pool at once; the next call opens a new
 * one. `destroy(address)` fails every stream on an instance (used when it is declared dead).
 */
export class UpstreamPool {
  private readonly perInstance: number;
  private readonly connectTimeoutMs: number;
  private readonly busyStreams: number;
  private readonly tls: UpstreamTls;
  private readonly pools = new Map<string, { conns: UpstreamConnection[]; next: number }>();
  private closed = false;

  constructor(options: UpstreamPoolOptions = {}) {
    this.perInstance = Math.max(1, options.connectionsPerInstance ?? 2);
    this.connectTimeoutMs = options.connectTimeoutMs ?? 2000;
    this.busyStreams = Math.max(1, options.streamsBeforeNewConnection ?? 32);
    this.tls = options.tls ?? cleartextUpstream();
  }

  /** A live (or connecting) connection to `address`. */
  get(address: string): UpstreamConnection {
    if (this.closed) throw new Error("upstream pool closed");
    let pool = this.pools.get(address);
    if (pool === undefined) {
      pool = { conns: [], next: 0 };
      this.pools.set(address, pool);
    }
    // Grow only under load: the first call of a new lease then reuses the connection the
    // health probe opened and identified, instead of opening and identifying another one.
    if (pool.conns.length < this.perInstance && pool.conns.every((c) => c.active >= this.busyStreams)) {
      const conn = this.open(address, pool.conns);
      pool.conns.push(conn);
      return conn;
    }
    pool.next = (pool.next + 1) % pool.conns.length;
    return pool.conns[pool.next] as UpstreamConnection;
  }

  /** A pooled connection to `address` that is up and identified (boot id known); never opens one. */
  identified(address: string): UpstreamConnection | undefined {
    return this.pools
      .get(address)
      ?.conns.find((c) => c.isConnected() && c.bootId !== undefined && !c.session.closed && !c.session.destroyed);
  }

  private open(address: string, list: UpstreamConnection[]): UpstreamConnection {
    const session = connect(`${this.tls.scheme}//${address}`, {
      ...this.tls.sessionOptions(address),
      settings: { enablePush: false, initialWindowSize: 1 << 20 },
      peerMaxConcurrentStreams: 1000,
    });
    let isConnected = false;
    let failure: (Error & { code?: string }) | undefined;
    const remove = () => {
      const i = list.indexOf(conn);
      if (i >= 0) list.splice(i, 1);
    };
    const connected = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        session.destroy(new Error(`connect to ${address} timed out after ${this.connectTimeoutMs} ms`));
      }, this.connectTimeoutMs);
      session.once("connect", () => {
        clearTimeout(timer);
        isConnected = true;
        // Larger connection window: many concurrent streams share it.
        try {
          session.setLocalWindowSize(16 << 20);
        } catch {}
        resolve();
      });
      session.once("close", () => {
        clearTimeout(timer);
        // Nothing listens there (or the process died while we connected).
        const refused = failure?.code === "ECONNREFUSED" || failure?.code === "ECONNRESET";
        // A TLS refusal names its reason (e.g. UNABLE_TO_VERIFY_LEAF_SIGNATURE: not signed by the CA).
        const code = failure?.code !== undefined && !failure.message.includes(failure.code) ? ` (${failure.code})` : "";
        reject(new ConnectFailure(`connection to ${address} failed: ${failure?.message ?? "closed"}${code}`, refused));
      });
    });
    connected.catch(() => {});
    session.on("error", (error) => {
      failure ??= error;
      remove();
    });
    session.on("goaway", () => remove());
    session.on("close", () => remove());
    session.unref();
    const conn: UpstreamConnection = { address, session, connected, isConnected: () => isConnected, active: 0 };
    return conn;
  }

  /**
   * A new connection outside the pool, for a probe that must not reuse a connection that may
   * be dying (diagnosis after a failure). The caller closes it.
   */
  dedicated(address: string): UpstreamConnection {
    return this.open(address, []);
  }

  /** Destroys every connection to `address` (their streams fail at once). */
  destroy(address: string): void {
    const pool = this.pools.get(address);
    if (pool === undefined) return;
    this.pools.delete(address);
    for (const conn of pool.conns) conn.session.destroy(undefined, constants.NGHTTP2_CANCEL);
  }

  close(): void {
    this.closed = true;
    for (const address of [...this.pools.keys()]) this.destroy(address);
  }
}
