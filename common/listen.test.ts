import assert from "node:assert/strict";
import * as net from "node:net";
import { networkInterfaces } from "node:os";
import { describe, it } from "node:test";
import { canConnect } from "../scripts/net-util.js";
import { listenOn, plainAddress } from "./listen.js";

const hasIpv6Loopback = Object.values(networkInterfaces()).some((list) => list?.some((i) => i.address === "::1"));

/** A server on a host whose kernel has no IPv6: binding an IPv6 address fails as it would there. */
class Ipv4OnlyServer extends net.Server {
  override listen(...args: unknown[]): this {
    const options = args[0] as net.ListenOptions;
    if (typeof options === "object" && options.host?.includes(":")) {
      const error = Object.assign(new Error(`listen EAFNOSUPPORT: address family not supported ${options.host}`), { code: "EAFNOSUPPORT" });
      process.nextTick(() => this.emit("error", error));
      return this;
    }
    return super.listen(...(args as Parameters<net.Server["listen"]>));
  }
}

const close = (server: net.Server) => new Promise((resolve) => server.close(resolve));

describe("listenOn()", () => {
  it("listens on :: for IPv6 and IPv4 clients alike", { skip: hasIpv6Loopback ? false : "no ::1 on this host" }, async (t) => {
    const server = net.createServer((socket) => socket.end());
    t.after(() => close(server));
    const bound = await listenOn(server, 0, "::");
    assert.equal(bound.address, "::");
    assert.equal(await canConnect(bound.port, "::1"), true, "IPv6 client");
    assert.equal(await canConnect(bound.port, "127.0.0.1"), true, "IPv4 client");
  });

  it("falls back to 0.0.0.0 when the host has no IPv6, and says why", async (t) => {
    const server = new Ipv4OnlyServer((socket) => socket.end());
    t.after(() => close(server));
    const reasons: string[] = [];
    const bound = await listenOn(server, 0, "::", (reason) => reasons.push((reason as NodeJS.ErrnoException).code ?? ""));
    assert.equal(bound.address, "0.0.0.0");
    assert.deepEqual(reasons, ["EAFNOSUPPORT"]);
    assert.equal(await canConnect(bound.port, "127.0.0.1"), true);
  });

  it("binds any other host as given: no fallback, errors propagate", async (t) => {
    await assert.rejects(
      listenOn(new Ipv4OnlyServer(), 0, "::1", () => assert.fail("no fallback")),
      { code: "EAFNOSUPPORT" },
    );
    const first = net.createServer();
    t.after(() => close(first));
    const { port } = await listenOn(first, 0, "127.0.0.1");
    await assert.rejects(listenOn(net.createServer(), port, "127.0.0.1"), { code: "EADDRINUSE" });
  });
});

describe("plainAddress()", () => {
  it("shows an IPv4 client of a dual-stack socket by its IPv4 address", () => {
    assert.equal(plainAddress("::ffff:127.0.0.1"), "127.0.0.1");
    assert.equal(plainAddress("::1"), "::1");
    assert.equal(plainAddress("10.1.2.3"), "10.1.2.3");
    assert.equal(plainAddress("::ffff:abcd"), "::ffff:abcd");
  });
});
