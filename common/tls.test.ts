import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { after, describe, it } from "node:test";
import * as tls from "node:tls";
import { pino } from "pino";
import { createCa, issueCertificate, serverTlsConfig } from "../scripts/dev-certs.js";
import { loadClientTls, loadServerTls, serverOptions, TlsFileError, type TlsServerConfig, watchTlsFiles } from "./tls.js";

const dir = mkdtempSync(join(tmpdir(), "tls-unit-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const ca = createCa(dir, "ca", "unit CA");
const otherCa = createCa(dir, "other-ca", "another CA");
const server = issueCertificate(ca, dir, "server", { commonName: "localhost", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
const renewed = issueCertificate(ca, dir, "renewed", { commonName: "localhost", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
const expired = issueCertificate(ca, dir, "expired", { commonName: "localhost", dnsNames: ["localhost"], days: -1 });

function config(overrides: Partial<TlsServerConfig> = {}): TlsServerConfig {
  return serverTlsConfig(server, overrides);
}

function problems(load: () => unknown): readonly string[] {
  try {
    load();
  } catch (error) {
    assert.ok(error instanceof TlsFileError, String(error));
    return error.problems;
  }
  assert.fail("expected a TlsFileError");
}

describe("loadServerTls()", () => {
  it("loads a certificate and its key, and describes the certificate", () => {
    const material = loadServerTls(config({ clientCaFile: ca.cert, clientAuth: "require" }));
    assert.match(material.summary.subject, /CN=localhost/);
    assert.match(material.summary.fingerprint256, /^[0-9A-F:]+$/);
    assert.ok(material.context.ca, "the client CA is part of the context");
  });

  it("says clearly what is wrong: unreadable, not PEM, mismatched, expired — every problem at once", () => {
    assert.match(
      problems(() => loadServerTls(config({ certFile: join(dir, "nope.crt") })))[0] as string,
      /TLS_CERT_FILE .*nope\.crt: cannot read/,
    );
    assert.match(problems(() => loadServerTls(config({ keyFile: join(dir, "nope.key") })))[0] as string, /TLS_KEY_FILE .*: cannot read/);
    writeFileSync(join(dir, "garbage.pem"), "not a certificate");
    assert.match(problems(() => loadServerTls(config({ certFile: join(dir, "garbage.pem") })))[0] as string, /not a PEM certificate/);
    assert.match(problems(() => loadServerTls(config({ keyFile: join(dir, "garbage.pem") })))[0] as string, /not a PEM private key/);
    assert.deepEqual(
      problems(() => loadServerTls(config({ keyFile: renewed.key }))),
      [`TLS_KEY_FILE ${renewed.key} does not match the certificate in TLS_CERT_FILE ${server.cert}`],
    );
    const both = problems(() =>
      loadServerTls(config({ certFile: expired.cert, keyFile: server.key, clientCaFile: join(dir, "no-ca.pem") })),
    );
    assert.equal(both.length, 3, both.join("\n"));
    assert.match(both.join("\n"), /the certificate expired on/);
    assert.match(both.join("\n"), /does not match/);
    assert.match(both.join("\n"), /TLS_CLIENT_CA_FILE .*no-ca\.pem: cannot read/);
  });
});

describe("loadClientTls()", () => {
  it("loads the CA and an optional client certificate, with the variables' names in messages", () => {
    const names = { ca: "UPSTREAM_TLS_CA_FILE", cert: "UPSTREAM_TLS_CERT_FILE", key: "UPSTREAM_TLS_KEY_FILE" };
    const options = loadClientTls({ caFile: ca.cert, certFile: server.cert, keyFile: server.key, serverName: undefined }, names);
    assert.ok(options.ca && options.cert && options.key);
    const bad = problems(() =>
      loadClientTls({ caFile: join(dir, "x"), certFile: expired.cert, keyFile: expired.key, serverName: undefined }, names),
    );
    assert.match(bad.join("\n"), /UPSTREAM_TLS_CA_FILE .*: cannot read/);
    assert.match(bad.join("\n"), /UPSTREAM_TLS_CERT_FILE .*expired/);
  });
});

describe("watchTlsFiles()", () => {
  it("serves renewed files to new connections, keeps open ones, and keeps the current files when new ones are bad", async (t) => {
    const live = { cert: join(dir, "live.crt"), key: join(dir, "live.key") };
    copyFileSync(server.cert, live.cert);
    copyFileSync(server.key, live.key);
    const liveConfig = config({ certFile: live.cert, keyFile: live.key });
    const tlsServer = tls.createServer(serverOptions(liveConfig, loadServerTls(liveConfig), ["h2"]), (socket) => {
      socket.on("error", () => {});
      socket.pipe(socket); // echo: shows a connection still works
    });
    await new Promise<void>((resolve) => tlsServer.listen(0, "127.0.0.1", resolve));
    const lines: { msg: string; problems?: string[] }[] = [];
    const logger = pino(
      { level: "info" },
      new Writable({
        write(chunk, _encoding, done) {
          lines.push(JSON.parse(chunk.toString()));
          done();
        },
      }),
    );
    const stop = watchTlsFiles(
      [live.cert, live.key],
      50,
      () => {
        const next = loadServerTls(liveConfig);
        tlsServer.setSecureContext(next.context);
        return next.summary;
      },
      logger,
      "test TLS",
    );
    // The peer certificate is read at connect: OpenSSL forgets it once TLS 1.3 session tickets arrive.
    const connect = () =>
      new Promise<{ socket: tls.TLSSocket; fingerprint: string | undefined }>((resolve, reject) => {
        const port = (tlsServer.address() as AddressInfo).port;
        const socket = tls.connect({ port, host: "127.0.0.1", ca: readFileSync(ca.cert), ALPNProtocols: ["h2"] }, () =>
          resolve({ socket, fingerprint: socket.getPeerX509Certificate()?.fingerprint256 }),
        );
        socket.once("error", reject);
      });
    const echoes = (socket: tls.TLSSocket) =>
      new Promise<boolean>((resolve) => {
        socket.once("data", (data: Buffer) => resolve(data.toString() === "ping"));
        socket.write("ping");
        setTimeout(() => resolve(false), 2000).unref();
      });
    const sockets: tls.TLSSocket[] = [];
    t.after(() => {
      stop();
      for (const s of sockets) s.destroy();
      tlsServer.close();
    });
    const first = await connect();
    sockets.push(first.socket);
    assert.ok(first.fingerprint);

    copyFileSync(renewed.cert, live.cert);
    copyFileSync(renewed.key, live.key);
    await until(() => lines.some((l) => /new certificate files loaded/.test(l.msg)));
    const second = await connect();
    sockets.push(second.socket);
    assert.notEqual(second.fingerprint, first.fingerprint, "a new connection sees the renewed certificate");
    assert.ok(await echoes(first.socket), "the connection opened before the swap still works");

    copyFileSync(otherCa.cert, live.cert); // a certificate that does not match the key
    await until(() => lines.some((l) => /cannot be used; keeping the current ones/.test(l.msg)));
    const problemLine = lines.find((l) => /keeping the current ones/.test(l.msg));
    assert.match(String(problemLine?.problems), /does not match/);
    const third = await connect();
    sockets.push(third.socket);
    assert.equal(third.fingerprint, second.fingerprint, "still the renewed one");
  });
});

async function until(predicate: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    assert.ok(Date.now() < deadline, "condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}
