// Bad input (issue 7): oversized messages, huge or malformed metadata, hostile tokens,
// garbage bytes, HTTP/1.1 to the gRPC port, half-open and slow connections. Every case gets a
// clear error or a clean close, the gateway keeps serving, and its memory stays bounded.
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import { join } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { authenticateCall } from "../../common/metadata-auth.js";
import { createTokenVerifier } from "../../common/tokens.js";
import { MyServiceAPI } from "../../gen/my_service/my_service_pb.js";
import { type GatewayClient, gatewayClient } from "../e2e-client.js";
import { type Stack, startStack } from "../stack.js";
import { checkDatabase, figure, gatewayPid, mintHeaders, outcome, rssKb, seeded, settle, sleep, usersFile } from "./helpers.js";
import { absurdSignedTokens, hostileTokens } from "./token-cases.js";
import { echoRequest, grpcFrame, rawCall, rawSocket } from "./wire.js";

const limit = 1024 * 1024;
const echoPath = "/my_service.MyServiceAPI/MyServiceEcho";
// While instances recycle after a Shutdown a new lease may briefly get RESOURCE_EXHAUSTED or UNAVAILABLE.
const capacity: number[] = [Code.ResourceExhausted, Code.Unavailable];
const invalidToken = { code: Code.Unauthenticated, message: "missing or invalid token" };

describe("bad input", () => {
  let stack: Stack;
  let client: GatewayClient;
  let pid: number;
  let port: number;
  let rssStart = 0;
  let tried = 0;
  const shutdownAnomalies: string[] = [];
  const tally = (n = 1) => {
    tried += n;
  };
  before(async () => {
    stack = await startStack({
      // 3: the rapid-reset and cancelled-first-call cases (see their tests).
      instances: 3,
      env: { USERS_FILE: usersFile, MAX_MESSAGE_BYTES: String(limit), HEALTH_CHECK_INTERVAL: "250ms", HEALTH_CHECK_TIMEOUT: "500ms" },
    });
    client = gatewayClient(stack.gatewayUrl);
    pid = await gatewayPid(stack);
    port = Number(stack.gatewayAddress.split(":")[1]);
    // Warm up (first calls load code), then take the baseline.
    const s = await mintHeaders(stack.jwtSecret, `warm-${Date.now()}`);
    await client.api.myServiceEcho({ value: "w" }, { headers: s });
    const down = await outcome(client.api.myServiceShutdown({}, { headers: s }));
    if (down.code !== 0) shutdownAnomalies.push(`warm-up: ${Code[down.code]} ${down.message}`);
    rssStart = rssKb(pid);
  });
  after(async () => {
    client?.close();
    await stack?.stop();
  });
  // Every test starts with every instance free (earlier Shutdowns recycled).
  beforeEach(async () => {
    try {
      await settle(stack, 5000);
    } catch (error) {
      const db = checkDatabase(join(stack.dataDir, "leases.db"));
      figure(
        `bad-input: not every instance free before a test (${String(error)}); leases: ${JSON.stringify(db.leases.map((l) => [l.session_id.slice(0, 24), l.pod_name]))}`,
      );
    }
  });

  /** The gateway still answers a fresh session end to end. */
  async function stillServing(label: string) {
    const c = gatewayClient(stack.gatewayUrl);
    try {
      const id = `alive-${label.replace(/\W+/g, "-")}-${Math.random().toString(36).slice(2, 7)}`;
      const reply = await c.api.login({ username: "TestUser", password: "TestPassword", sessionId: id }, { timeoutMs: 5000 });
      assert.ok(reply.token, `${label}: Login works`);
      const headers = { authorization: reply.token, "session-id": id };
      for (let i = 0; ; i++) {
        const r = await outcome(c.api.myServiceEcho({ value: "ok" }, { headers, timeoutMs: 5000 }));
        if (r.code === 0) {
          assert.equal(r.value!.serverSessionId, id);
          break;
        }
        assert.ok(
          capacity.includes(r.code) && i < 60,
          `${label}: Echo works (${r.code} ${r.message})\n${stack.output().split("\n").slice(-15).join("\n")}`,
        );
        await sleep(250);
      }
      // A Shutdown is retried as a client would; an UNAVAILABLE answer is counted and reported
      // (seen intermittently while instances recycle, see the report of issue 7).
      for (let i = 0; ; i++) {
        const down = await outcome(c.api.myServiceShutdown({}, { headers, timeoutMs: 5000 }));
        if (down.code === 0 || (down.code === Code.PermissionDenied && down.message === "Server session is not set")) break;
        shutdownAnomalies.push(`${label}: ${Code[down.code]} ${down.message}`);
        assert.ok(i < 10, `${label}: Shutdown works (${down.code} ${down.message})`);
        await sleep(300);
      }
    } finally {
      c.close();
    }
  }

  it("refuses oversized messages with RESOURCE_EXHAUSTED in both directions, never buffering them", async () => {
    const h = await mintHeaders(stack.jwtSecret, `big-${Date.now()}`);
    const big = await outcome(client.api.myServiceEcho({ value: "x".repeat(limit + 1000) }, { headers: h }));
    assert.equal(big.code, Code.ResourceExhausted);
    assert.match(big.message, /^request message larger than max \(\d+ vs\. 1048576\)$/);
    // Just under the limit in, just over it out (the reply adds pod name and session ids).
    // Raw call without grpc-accept-encoding: the instance answers uncompressed.
    const back = await rawCall(stack.gatewayUrl, echoPath, h, [grpcFrame(echoRequest("y".repeat(limit - 40)))], { timeoutMs: 10_000 });
    assert.equal(back.grpcStatus, Code.ResourceExhausted, `response over the limit: ${back.grpcMessage}`);
    // The instance enforces the same MAX_MESSAGE_BYTES on what it writes (and, after
    // decompression, on what it reads); the relay's own response check backs it up when an
    // instance is configured with a larger limit.
    assert.match(
      back.grpcMessage ?? "",
      /^(response message larger than max \(\d+ vs\. 1048576\)|message size \d+ is larger than configured writeMaxBytes 1048576)$/,
    );
    // A frame that claims 4 GiB but sends a few bytes is refused at once, not awaited.
    const claimed = await rawCall(stack.gatewayUrl, echoPath, h, [grpcFrame(echoRequest("tiny"), 0xffffffff)], { timeoutMs: 5000 });
    assert.equal(claimed.grpcStatus, Code.ResourceExhausted, JSON.stringify(claimed));
    assert.match(claimed.grpcMessage ?? "", /larger than max \(4294967295 vs\. 1048576\)/);
    // Several messages on a unary call, each under the limit, together over it.
    const many = await rawCall(
      stack.gatewayUrl,
      echoPath,
      h,
      Array.from({ length: 3 }, () => grpcFrame(Buffer.alloc(limit - 10))),
      { timeoutMs: 10_000 },
    );
    assert.equal(many.grpcStatus, Code.ResourceExhausted, JSON.stringify({ ...many, body: many.body.length }));
    // Login and the Connect protocol (HTTP/1.1) have the same limit.
    const login = await outcome(client.api.login({ username: "u".repeat(limit + 10), password: "p", sessionId: "s" }));
    assert.equal(login.code, Code.ResourceExhausted);
    const connect = createClient(MyServiceAPI, createConnectTransport({ baseUrl: stack.gatewayUrl, httpVersion: "1.1" }));
    const viaConnect = await outcome(connect.myServiceEcho({ value: "z".repeat(limit + 10) }, { headers: h }));
    assert.equal(viaConnect.code, Code.ResourceExhausted);
    const ok = await client.api.myServiceEcho({ value: "small" }, { headers: h });
    assert.equal(ok.serverSessionId, h["session-id"], "the session is still usable");
    await client.api.myServiceShutdown({}, { headers: h });
    tally(6);
    await stillServing("oversized");
  });

  it("refuses every hostile token with UNAUTHENTICATED, in authenticateCall and through the gateway", async () => {
    const id = `tok-${Date.now()}`;
    const cases = await hostileTokens(stack.jwtSecret, id);
    const verify = createTokenVerifier({ secret: stack.jwtSecret });
    const conns = [client, gatewayClient(stack.gatewayUrl)];
    for (const [name, token] of cases) {
      const unit = await authenticateCall(id, token, verify);
      assert.equal(unit.ok, false, `authenticateCall accepted: ${name}`);
      for (const authorization of [token, `Bearer ${token}`]) {
        let headers: Record<string, string> = { "session-id": id, authorization };
        if (/[\r\n\0]/.test(authorization)) headers = { "session-id": id };
        const r = await outcome(conns[0]!.api.myServiceEcho({ value: "x" }, { headers }));
        assert.deepEqual({ code: r.code, message: r.message }, invalidToken, `${name} (${authorization.slice(0, 7)})`);
        tally();
      }
      // The Connect protocol goes through the same check.
      const r = await outcome(
        createClient(MyServiceAPI, createConnectTransport({ baseUrl: stack.gatewayUrl, httpVersion: "1.1" })).myServiceEcho(
          { value: "x" },
          { headers: { "session-id": id, authorization: token } },
        ),
      );
      assert.deepEqual({ code: r.code, message: r.message }, invalidToken, `connect: ${name}`);
      tally();
    }
    conns[1]!.close();
    // Tokens signed with the real secret but an absurd exp: only a holder of the secret can
    // make them. Whatever the verdict, nothing breaks; the verdict is reported.
    const absurd = await absurdSignedTokens(stack.jwtSecret, `${id}-absurd`);
    const verdicts: string[] = [];
    for (const [name, token] of absurd) {
      const r = await outcome(
        client.api.myServiceEcho({ value: "x" }, { headers: { "session-id": `${id}-absurd`, authorization: token } }),
      );
      verdicts.push(`${name}: ${r.code === 0 ? "accepted" : `${Code[r.code]} ${r.message}`}`);
      if (r.code === 0) await client.api.myServiceShutdown({}, { headers: { "session-id": `${id}-absurd`, authorization: token } });
      tally();
    }
    figure(
      `bad-input: ${cases.length} hostile tokens x (raw, Bearer, Connect) refused; absurd-exp tokens signed with the real secret: ${verdicts.join("; ")}`,
    );
    await stillServing("tokens");
  });

  it("refuses malformed session ids and metadata with a clear status", async () => {
    const id = `meta-${Date.now()}`;
    const h = await mintHeaders(stack.jwtSecret, id);
    const cases: [string, Record<string, string | string[]>, { code: number; message?: string }][] = [
      ["session-id empty", { ...h, "session-id": "" }, { code: Code.Unauthenticated, message: "missing session-id" }],
      ["session-id spaces", { ...h, "session-id": "   " }, { code: Code.Unauthenticated, message: "missing session-id" }],
      ["session-id with a tab", { ...h, "session-id": `${id}\tx` }, invalidToken],
      ["session-id latin1", { ...h, "session-id": "s\u00e9\u00ff" }, invalidToken],
      ["session-id 257 chars", { ...h, "session-id": "s".repeat(257) }, invalidToken],
      // Over MAX_HEADER_BYTES (16 KiB): a status at once (the message is checked in test/interop.e2e.test.ts).
      ["session-id 60 KB", { ...h, "session-id": "s".repeat(60_000) }, { code: Code.ResourceExhausted }],
      ["authorization 60 KB", { ...h, authorization: "a".repeat(60_000) }, { code: Code.ResourceExhausted }],
      ["another session's token", { ...h, "session-id": `${id}-x` }, invalidToken],
      ["two session-id values", { ...h, "session-id": [id, `${id}-other`] }, { code: -2 }],
      ["grpc-timeout garbage", { ...h, "grpc-timeout": "99999999999H" }, { code: -2 }],
      ["x-request-id 100 KB", { ...h, "x-request-id": "r".repeat(100_000) }, { code: -2 }],
      ["content-type grpc+json", { ...h, "content-type": "application/grpc+json" }, { code: -2 }],
    ];
    const seen: string[] = [];
    for (const [name, headers, expected] of cases) {
      const r = await rawCall(stack.gatewayUrl, echoPath, headers, [grpcFrame(echoRequest("m"))], { timeoutMs: 8000 });
      assert.ok(!r.timedOut, `${name}: no hang`);
      if (expected.code === -2) {
        // Any clear answer; never INTERNAL, never a Session conflict.
        assert.ok(r.grpcStatus !== undefined || r.rstCode !== undefined || r.error !== undefined, `${name}: an answer`);
        assert.notEqual(r.grpcStatus, Code.Internal, `${name}: ${r.grpcMessage}`);
        assert.doesNotMatch(r.grpcMessage ?? "", /Session conflict/);
      } else {
        assert.equal(r.grpcStatus, expected.code, `${name}: ${JSON.stringify({ ...r, body: undefined })}`);
        if (expected.message) assert.equal(r.grpcMessage, expected.message, name);
      }
      seen.push(`${name}=${r.grpcStatus ?? r.rstCode ?? r.error}`);
      tally();
    }
    // A header field too large for HTTP/2 to decode (over 64 KiB), or more fields than it takes:
    // the connection or stream closes cleanly.
    const huge: [string, Record<string, string>][] = [
      ["session-id 1 MB", { ...h, "session-id": "s".repeat(1 << 20) }],
      ["authorization 4 MB", { ...h, authorization: "a".repeat(4 << 20) }],
      ["5,000 headers", Object.fromEntries([...Object.entries(h), ...Array.from({ length: 5000 }, (_, i) => [`x-h-${i}`, "v"])])],
    ];
    for (const [name, headers] of huge) {
      const r = await rawCall(stack.gatewayUrl, echoPath, headers, [grpcFrame(echoRequest("m"))], { timeoutMs: 8000 });
      assert.ok(!r.timedOut, `${name}: no hang`);
      assert.notEqual(r.grpcStatus, 0, `${name}: not served`);
      seen.push(
        `${name}=${r.grpcStatus ?? (r.rstCode !== undefined ? `rst ${r.rstCode}` : r.error)}${r.error ? ` (${r.error.slice(0, 40)})` : ""}`,
      );
      tally();
    }
    // Login with hostile session ids (in the message body, where anything can be sent).
    const loginCases = ["a\u0000b", "line\nbreak", "\u001b[31mred", "\u007f", "s".repeat(257), "s".repeat(900_000)];
    for (const sessionId of loginCases) {
      const r = await outcome(client.api.login({ username: "TestUser", password: "TestPassword", sessionId }));
      assert.deepEqual(
        { code: r.code, message: r.message },
        { code: Code.InvalidArgument, message: "session_id must be at most 256 characters, without control characters" },
      );
      tally();
    }
    await outcome(client.api.myServiceShutdown({}, { headers: h }));
    figure(`bad-input: metadata outcomes: ${seen.join(", ")}`);
    await stillServing("metadata");
  });

  it("closes garbage, HTTP/1.1 to the gRPC path, half-open and slow connections cleanly", async () => {
    const rnd = seeded(11);
    // Half-open and slowloris connections run in the background meanwhile: the front door must
    // close every connection that does not say which protocol it speaks within 10 s.
    const idle = Array.from({ length: 50 }, () => rawSocket(port, [], { timeoutMs: 15_000 }));
    const slowloris = rawSocket(
      port,
      [..."PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"].map((c) => Buffer.from(c)),
      { delayMs: 1000, timeoutMs: 15_000 },
    );
    const results: string[] = [];
    for (let i = 0; i < 20; i++) {
      const r = await rawSocket(port, [rnd.bytes(1 + rnd.int(4096))], { timeoutMs: 5000 });
      assert.ok(r.closedByServer, `garbage ${i}: closed`);
      tally();
    }
    results.push("20 garbage payloads: closed");
    const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    for (let i = 0; i < 10; i++) {
      const r = await rawSocket(port, [preface, rnd.bytes(64 + rnd.int(2048))], { timeoutMs: 5000 });
      assert.ok(r.closedByServer, `h2 preface + garbage ${i}: closed`);
      tally();
    }
    results.push("10 h2 preface + garbage: closed");
    const h1 = async (request: string) => {
      const r = await rawSocket(port, [Buffer.from(request)], { timeoutMs: 5000 });
      const status = /^HTTP\/1\.1 (\d{3})/.exec(r.reply)?.[1];
      tally();
      return { status, ...r };
    };
    const grpcOverH1 = await h1(
      `POST ${echoPath} HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc\r\nContent-Length: 8\r\nConnection: close\r\n\r\n\0\0\0\0\x03\x0a\x01a`,
    );
    // connect-node speaks gRPC over HTTP/1.1 too (chunked trailers): the same auth applies.
    assert.equal(grpcOverH1.status, "200", grpcOverH1.reply.slice(0, 300));
    assert.match(grpcOverH1.reply, /grpc-status: 16\r\n/);
    assert.match(grpcOverH1.reply, /grpc-message: missing%20session-id/);
    const get = await h1(`GET ${echoPath} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    assert.match(get.status ?? "", /^4\d\d$/);
    const bigHeader = await h1(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${"b".repeat(100_000)}\r\n\r\n`);
    assert.equal(bigHeader.status, "431");
    const smuggle = await h1("POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert.equal(smuggle.status, "400", "CL + TE is refused");
    const badVersion = await h1("GET / HTTP/9.9\r\n\r\n");
    assert.ok(badVersion.closedByServer);
    results.push(
      `gRPC over HTTP/1.1 -> ${grpcOverH1.status} + grpc-status 16, GET -> ${get.status}, 100 KB header -> ${bigHeader.status}, CL+TE -> ${smuggle.status}, HTTP/9.9 -> ${badVersion.status ?? "closed"}`,
    );
    // Half-open: part of the preface, then FIN.
    const half = await rawSocket(port, [preface.subarray(0, 10)], { end: true, timeoutMs: 5000 });
    assert.ok(half.closedByServer, "half-open after FIN: closed");
    tally();
    // A slow client: the request's bytes trickle in over ~2 s, it is answered normally.
    const h = await mintHeaders(stack.jwtSecret, `slow-${Date.now()}`);
    const frame = grpcFrame(echoRequest("slow"));
    for (let i = 0; (await outcome(client.api.myServiceEcho({ value: "lease" }, { headers: h }))).code !== 0; i++) {
      assert.ok(i < 40, "lease for the slow client");
      await sleep(250);
    }
    const slow = await rawCall(
      stack.gatewayUrl,
      echoPath,
      h,
      [...frame].map((b) => Buffer.from([b])),
      { chunkDelayMs: 150, timeoutMs: 15_000 },
    );
    assert.equal(slow.grpcStatus, 0, JSON.stringify({ ...slow, body: undefined }));
    tally();
    // A slow reader: a Subscribe whose client never reads, next to normal traffic.
    const lazy = http2.connect(stack.gatewayUrl, { settings: { initialWindowSize: 16 } });
    lazy.on("error", () => {});
    const lazyStream = lazy.request({
      ":method": "POST",
      ":path": "/my_service.MyServiceAPI/MyServiceSubscribe",
      "content-type": "application/grpc",
      te: "trailers",
      ...h,
    });
    lazyStream.on("error", () => {});
    lazyStream.end(grpcFrame(echoRequest("lazy")));
    lazyStream.pause();
    await stillServing("slow reader");
    lazy.destroy();
    await outcome(client.api.myServiceShutdown({}, { headers: h }));
    tally();
    const idleDone = await Promise.all(idle);
    assert.ok(
      idleDone.every((r) => r.closedByServer && r.ms < 13_000),
      `idle connections closed: ${idleDone.map((r) => r.ms).join(",")}`,
    );
    const loris = await slowloris;
    assert.ok(loris.closedByServer && loris.ms < 13_000, `slowloris closed after ${loris.ms} ms`);
    tally(51);
    results.push(`50 silent connections closed after ${Math.max(...idleDone.map((r) => r.ms))} ms, slowloris after ${loris.ms} ms`);
    figure(`bad-input: ${results.join("; ")}`);
    await stillServing("sockets");
  });

  it("survives HTTP/2 abuse: stream floods, rapid resets, idle sessions", async () => {
    const session = http2.connect(stack.gatewayUrl);
    session.on("error", () => {});
    session.setMaxListeners(0);
    // 1,500 concurrent streams on one connection (the server allows 1,000).
    const flood = await Promise.all(
      Array.from({ length: 1500 }, () => rawCall(session, echoPath, {}, [grpcFrame(echoRequest("f"))], { timeoutMs: 15_000 })),
    );
    const floodCodes: Record<string, number> = {};
    for (const r of flood) {
      const k =
        r.grpcStatus !== undefined
          ? `grpc ${r.grpcStatus}`
          : r.rstCode !== undefined
            ? `rst ${r.rstCode}`
            : r.timedOut
              ? "timeout"
              : `error`;
      floodCodes[k] = (floodCodes[k] ?? 0) + 1;
    }
    assert.equal(floodCodes.timeout, undefined, JSON.stringify(floodCodes));
    assert.ok(!flood.some((r) => r.grpcStatus === 0 || r.grpcStatus === Code.Internal), JSON.stringify(floodCodes));
    session.destroy();
    tally(1500);
    // Rapid reset: open and cancel 5,000 streams as fast as possible.
    const rr = http2.connect(stack.gatewayUrl);
    rr.on("error", () => {});
    const h = await mintHeaders(stack.jwtSecret, `rr-${Date.now()}`);
    for (let i = 0; i < 5000 && !rr.destroyed; i++) {
      try {
        const s = rr.request({ ":method": "POST", ":path": echoPath, "content-type": "application/grpc", ...h });
        s.on("error", () => {});
        s.close(http2.constants.NGHTTP2_CANCEL);
      } catch {
        break;
      }
      if (i % 500 === 0) await sleep(1);
    }
    await sleep(300);
    rr.destroy();
    for (let i = 0; i < 10; i++) {
      const down = await outcome(client.api.myServiceShutdown({}, { headers: h }));
      if (down.code === 0 || down.code === Code.PermissionDenied) break;
      await sleep(300);
    }
    tally(5000);
    // 200 idle HTTP/2 sessions (preface and SETTINGS only).
    const idle = await Promise.all(
      Array.from(
        { length: 200 },
        () =>
          new Promise<http2.ClientHttp2Session>((resolve) => {
            const s = http2.connect(stack.gatewayUrl);
            s.on("error", () => {});
            s.once("connect", () => resolve(s));
            s.once("close", () => resolve(s));
          }),
      ),
    );
    const rssIdle = rssKb(pid);
    await stillServing("h2 abuse");
    for (const s of idle) s.destroy();
    tally(200);
    figure(
      `bad-input: 1,500 streams on one connection -> ${JSON.stringify(floodCodes)}; 5,000 rapid resets; 200 idle h2 sessions (RSS with them ${Math.round(rssIdle / 1024)} MB)`,
    );
  });

  it("releases the lease on Shutdown of a session whose first call was cancelled before reaching its instance", async () => {
    const h = await mintHeaders(stack.jwtSecret, `cancelled-${Date.now()}`);
    // HEADERS only: the gateway routes (acquires the lease), the request body never comes, then a cancel.
    const session = http2.connect(stack.gatewayUrl);
    session.on("error", () => {});
    const stream = session.request({ ":method": "POST", ":path": echoPath, "content-type": "application/grpc", te: "trailers", ...h });
    stream.on("error", () => {});
    await sleep(300);
    stream.close(http2.constants.NGHTTP2_CANCEL);
    await sleep(200);
    session.destroy();
    const leased = checkDatabase(join(stack.dataDir, "leases.db")).leases.some((l) => l.session_id === h["session-id"]);
    const down = await outcome(client.api.myServiceShutdown({}, { headers: h }));
    const after = checkDatabase(join(stack.dataDir, "leases.db")).leases.some((l) => l.session_id === h["session-id"]);
    figure(
      `bad-input: cancelled first call: leased=${leased}; Shutdown -> ${Code[down.code] ?? down.code} ${down.message}; lease still held after Shutdown=${after}`,
    );
    tally();
    assert.ok(!after, "the lease is released (or never taken)");
  });

  it("counts compressed messages against the limit too (a gzip bomb must not pass)", async () => {
    const h = await mintHeaders(stack.jwtSecret, `gzip-${Date.now()}`);
    const { gzipSync } = await import("node:zlib");
    // 64 MiB EchoRequest, ~64 KiB on the wire.
    const inflated = echoRequest("a".repeat(64 << 20));
    const compressed = gzipSync(inflated);
    const frame = grpcFrame(compressed);
    frame[0] = 1;
    const r = await rawCall(stack.gatewayUrl, echoPath, { ...h, "grpc-encoding": "gzip", "grpc-accept-encoding": "gzip" }, [frame], {
      timeoutMs: 20_000,
    });
    figure(
      `bad-input: gzip bomb request (${compressed.length} bytes on the wire, ${inflated.length} inflated, limit ${limit}) -> grpc-status ${r.grpcStatus} ${r.grpcMessage ?? ""} (${r.body.length} response bytes)`,
    );
    tally();
    // Response side: a client that accepts gzip gets a reply over the limit compressed.
    const back = await outcome(client.api.myServiceEcho({ value: "y".repeat(limit - 20) }, { headers: h }));
    figure(`bad-input: ${limit - 20}-byte Echo answered through a ${limit}-byte limit when gzip is accepted -> code ${back.code}`);
    tally();
    await outcome(client.api.myServiceShutdown({}, { headers: h }));
    assert.equal(r.grpcStatus, Code.ResourceExhausted, "compressed request over the limit");
    assert.equal(back.code, Code.ResourceExhausted, "compressed response over the limit");
  });

  it("keeps its memory bounded", async () => {
    await sleep(1000);
    const rssEnd = rssKb(pid);
    figure(
      `bad-input: Shutdown answered other than OK in stillServing: ${shutdownAnomalies.length === 0 ? "never" : shutdownAnomalies.join("; ")}`,
    );
    figure(
      `bad-input: ${tried} bad inputs tried; gateway RSS ${Math.round(rssStart / 1024)} MB before, ${Math.round(rssEnd / 1024)} MB after`,
    );
    assert.ok(rssEnd > 0, "the gateway process is still the same one (never crashed)");
    assert.equal(await gatewayPid(stack), pid, "the gateway never restarted");
    assert.ok(rssEnd - rssStart < 200 * 1024, `RSS grew by ${Math.round((rssEnd - rssStart) / 1024)} MB`);
  });
});
