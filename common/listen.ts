import type { AddressInfo, Server } from "node:net";

/** `LISTEN_HOST` default: every IPv6 and IPv4 address of the host, on one socket. */
export const dualStackHost = "::";

/** Where a dual-stack listener goes on a host without IPv6. */
export const ipv4AnyHost = "0.0.0.0";

/** Errors binding `::` gives on a host whose kernel has no IPv6. */
const noIpv6 = new Set(["EAFNOSUPPORT", "EADDRNOTAVAIL", "EPROTONOSUPPORT"]);

function bind(server: Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error) => reject(error);
    server.once("error", onError);
    // ipv6Only: false is explicit: the socket takes IPv4 too whatever the host's bindv6only says.
    server.listen({ port, host, ipv6Only: false }, () => {
      server.off("error", onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

/**
 * Listens on `host:port`. `::` (the default of `LISTEN_HOST`) is dual-stack: one socket takes
 * IPv6 and IPv4 connections (IPv4 peers appear as `::ffff:a.b.c.d`). On a host without IPv6
 * it listens on `0.0.0.0` instead and calls `onFallback` with the reason (to log it); any
 * other host is bound as given, without fallback. Resolves to the bound address.
 */
export async function listenOn(server: Server, port: number, host: string, onFallback?: (reason: Error) => void): Promise<AddressInfo> {
  try {
    return await bind(server, port, host);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "";
    if (host !== dualStackHost || !noIpv6.has(code)) throw error;
    onFallback?.(error as Error);
    return bind(server, port, ipv4AnyHost);
  }
}

/** A peer address as people write it: `::ffff:127.0.0.1` (IPv4 on a dual-stack socket) → `127.0.0.1`. */
export function plainAddress(address: string): string {
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}
