import type { SecureClientSessionOptions } from "node:http2";
import { isIP } from "node:net";
import { checkServerIdentity, type PeerCertificate, type SecureContextOptions } from "node:tls";
import type { TlsClientConfig } from "../../common/tls.js";

/**
 * How the gateway reaches instances: cleartext HTTP/2, or TLS with the CA instance
 * certificates must chain to (and the gateway's client certificate for mTLS). The relay's
 * connection pool, its probes and PINGs, and the Connect proxy all connect through it.
 */
export interface UpstreamTls {
  /** URL scheme of instance connections: `http:` (h2c) or `https:`. */
  readonly scheme: "http:" | "https:";
  /** Options of a new HTTP/2 session to `address`: the current TLS material and the name check. */
  sessionOptions(address: string): SecureClientSessionOptions;
  /** Called after the material changed (rotated files); returns a function that unsubscribes. */
  onChange(listener: () => void): () => void;
  /** Uses new material for connections opened from now on. */
  update(material: SecureContextOptions): void;
}

/** Host part of `host:port` (brackets of an IPv6 address removed). */
function hostOf(address: string): string {
  const host = address.slice(0, address.lastIndexOf(":"));
  return host.startsWith("[") ? host.slice(1, -1) : host;
}

/** Cleartext HTTP/2 to instances (the default). */
export function cleartextUpstream(): UpstreamTls {
  return { scheme: "http:", sessionOptions: () => ({}), onChange: () => () => {}, update: () => {} };
}

/**
 * TLS to instances with `material` (from `loadClientTls`). An instance's certificate must chain
 * to the CA and name `config.serverName` — instances behind one DNS name share it — or, without
 * one, the host of the address dialled.
 */
export function createUpstreamTls(config: TlsClientConfig, material: SecureContextOptions): UpstreamTls {
  let current = material;
  const listeners = new Set<() => void>();
  return {
    scheme: "https:",
    sessionOptions(address) {
      const name = config.serverName ?? hostOf(address);
      return {
        ...current,
        minVersion: "TLSv1.2",
        // SNI carries names only, never an IP address (RFC 6066).
        ...(isIP(name) === 0 ? { servername: name } : {}),
        checkServerIdentity: (_host: string, cert: PeerCertificate) => checkServerIdentity(name, cert),
      };
    },
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    update(material) {
      current = material;
      for (const listener of listeners) listener();
    },
  };
}
