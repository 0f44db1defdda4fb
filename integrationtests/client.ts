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

/** `http://host:port` from `host:port` (a URL is taken as is). */
export function baseUrlFromAddress(address: string): string {
  return /^https?:\/\//.test(address) ? address : `http://${address}`;
}

/**
 * Opens a fresh gRPC (HTTP/2 cleartext) connection to `address`; SPEC 8 wants scenarios on
 * fresh connections, so no scenario shares an HTTP/2 session with another.
 */
export function createOwnedTransport(address: string): OwnedTransport {
  const baseUrl = baseUrlFromAddress(address);
  const sessionManager = new Http2SessionManager(baseUrl);
  return {
    transport: createGrpcTransport({ baseUrl, sessionManager }),
    close: () => sessionManager.abort(),
  };
}

/** A MyServiceAPI client on `transport`. */
export function myServiceClient(transport: Transport): MyServiceClient {
  return createClient(MyServiceAPI, transport);
}
