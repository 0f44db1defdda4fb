import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { loadServerTls, serverOptions, type TlsServerConfig } from "../common/tls.js";
import { createCa, issueCertificate, serverTlsConfig } from "../scripts/dev-certs.js";
import { createFrontDoor, type FrontDoor } from "./front-door.js";

const dir = mkdtempSync(join(tmpdir(), "front-door-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const ca = createCa(dir, "ca");
const clientCa = createCa(dir, "client-ca", "client CA");
const server = issueCertificate(ca, dir, "server", { commonName: "localhost", ipAddresses: ["127.0.0.1"] });
const alice = issueCertificate(clientCa, dir, "alice", { commonName: "alice", usage: "client" });
const mallory = issueCertificate(createCa(dir, "stranger", "stranger CA"), dir, "mallory", { commonName: "mallory", usage: "client" });

/** A front door whose HTTP/2 and HTTP/1.1 servers answer which of them served the request. */
async function door(tls?: TlsServerConfig): Promise<{ port: number; close: () => void }> {
  const h2 = http2.createServer();
  h2.on("stream", (stream) => {
    stream.respond({ ":status": 200 });
    stream.end("h2");
  });
  const h1 = http.createServer((_req, res) => res.end("http/1.1"));
  const frontDoor: FrontDoor = createFrontDoor({
    h2,
    h1,
    tls:
      tls === undefined
        ? undefined
        : {
            options: serverOptions(tls, loadServerTls(tls), ["h2", "http/1.1"]),
            refuseInvalidOptionalCertificate: tls.clientAuth === "optional",
          },
  });
  await new Promise<void>((resolve) => frontDoor.listen(0, "127.0.0.1", resolve));
  return {
    port: (frontDoor.address() as AddressInfo).port,
    close: () => {
      frontDoor.close();
      h1.closeAllConnections();
    },
  };
}

function h2Get(url: string, options: http2.SecureClientSessionOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url, options);
    session.on("error", reject);
    const stream = session.request({ ":path": "/" });
    let body = "";
    let answered = false;
    stream.on("response", () => {
      answered = true;
    });
    stream.on("data", (c: Buffer) => {
      body += c.toString();
    });
    stream.on("close", () => {
      session.close();
      if (answered) resolve(body);
      else reject(new Error(`no response (stream closed, code ${stream.rstCode})`));
    });
    stream.on("error", reject);
    stream.end();
  });
}

function h1Get(url: string, options: https.RequestOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const get = url.startsWith("https:") ? https.get : http.get;
    get(url, { ...options, agent: false }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => {
        body += c.toString();
      });
      res.on("end", () => resolve(body));
    }).on("error", reject);
  });
}

const tlsConfig = (overrides: Partial<TlsServerConfig> = {}): TlsServerConfig => serverTlsConfig(server, overrides);

describe("createFrontDoor()", () => {
  it("in cleartext: the HTTP/2 preface goes to the HTTP/2 server, anything else to HTTP/1.1", async (t) => {
    const d = await door();
    t.after(d.close);
    assert.equal(await h2Get(`http://127.0.0.1:${d.port}`), "h2");
    assert.equal(await h1Get(`http://127.0.0.1:${d.port}/`), "http/1.1");
  });

  it("with TLS: ALPN h2 and http/1.1 each reach their server; a client without ALPN is sniffed", async (t) => {
    const d = await door(tlsConfig());
    t.after(d.close);
    const caPem = readFileSync(ca.cert);
    assert.equal(await h2Get(`https://127.0.0.1:${d.port}`, { ca: caPem }), "h2");
    assert.equal(
      await h1Get(`https://127.0.0.1:${d.port}/`, { ca: caPem, ALPNProtocols: ["http/1.1"] } as https.RequestOptions),
      "http/1.1",
    );
    assert.equal(await h1Get(`https://127.0.0.1:${d.port}/`, { ca: caPem }), "http/1.1");
  });

  describe("TLS_CLIENT_AUTH=optional", () => {
    let d: { port: number; close: () => void };
    before(async () => {
      d = await door(tlsConfig({ clientCaFile: clientCa.cert, clientAuth: "optional" }));
    });
    after(() => d.close());
    const caPem = readFileSync(ca.cert);

    it("serves a client without a certificate and one with a certificate of the client CA", async () => {
      assert.equal(await h2Get(`https://127.0.0.1:${d.port}`, { ca: caPem }), "h2");
      assert.equal(
        await h2Get(`https://127.0.0.1:${d.port}`, { ca: caPem, cert: readFileSync(alice.cert), key: readFileSync(alice.key) }),
        "h2",
      );
    });

    it("refuses a certificate of another CA (node alone would let it through)", async () => {
      await assert.rejects(
        h2Get(`https://127.0.0.1:${d.port}`, { ca: caPem, cert: readFileSync(mallory.cert), key: readFileSync(mallory.key) }),
      );
    });
  });
});
