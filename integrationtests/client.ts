import { type Client, createClient, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { MyServiceAPI } from "../gen/my_service/my_service_pb.js";

/** A MyServiceAPI client speaking native gRPC over HTTP/2 cleartext. */
export type MyServiceClient = Client<typeof MyServiceAPI>;

/** A gRPC transport on its own HTTP/2 connection. */
export interface OwnedTransport {
  readonly transport: Transport;
  /** Closes the connection and every stream still open on it. */
  close(): void;
}

/** TLS towards a server: the CA its certificate chains to (default the system's), and a client certificate. */
export interface ClientTls {
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
}

/** `http://host:port` (or `https://` with TLS) from `host:port` (a URL is taken as is). */
export function baseUrlFromAddress(address: string, tls = false): string {
  return /^https?:\/\//.test(address) ? address : `${tls ? "https" : "http"}://${address}`;
}

/**
 * Opens a fresh gRPC connection to `address` (HTTP/2 cleartext, or TLS with `tls`); SPEC 8 wants
 * scenarios on fresh connections, so no scenario shares an HTTP/2 session with another.
 */
export function createOwnedTransport(address: string, tls?: ClientTls): OwnedTransport {
  const baseUrl = baseUrlFromAddress(address, tls !== undefined);
  const sessionManager = new Http2SessionManager(baseUrl, undefined, tls ?? {});
  return {
    transport: createGrpcTransport({ baseUrl, sessionManager }),
    close: () => sessionManager.abort(),
  };
}

/** A MyServiceAPI client on `transport`. */
export function myServiceClient(transport: Transport): MyServiceClient {
  return createClient(MyServiceAPI, transport);
}
