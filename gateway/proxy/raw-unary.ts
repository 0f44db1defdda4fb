import type { ClientHttp2Session, OutgoingHttpHeaders } from "node:http2";
import { decodeGrpcMessage, firstMessage, frameMessage } from "./grpc-frames.js";

/** Result of a unary gRPC call made over a raw HTTP/2 session. */
export interface RawUnaryResult {
  /** grpc-status (0 = OK). */
  readonly status: number;
  readonly message: string;
  /** The serialized response message (empty when status ≠ 0). */
  readonly data: Buffer;
}

/** A failure to complete the call at the transport level (no grpc-status received). */
export class TransportError extends Error {
  override readonly name = "TransportError";
}

/**
 * Makes one unary gRPC call on `session` with a hard `timeoutMs` bound. Costs a fraction of a
 * connect-node client call; used for probes and gateway-initiated calls (recycling).
 */
export function rawUnary(
  session: ClientHttp2Session,
  path: string,
  request: Uint8Array,
  headers: OutgoingHttpHeaders,
  timeoutMs: number,
): Promise<RawUnaryResult> {
  return new Promise((resolve, reject) => {
    let stream: ReturnType<ClientHttp2Session["request"]>;
    try {
      stream = session.request({
        ":method": "POST",
        ":path": path,
        "content-type": "application/grpc",
        te: "trailers",
        "grpc-timeout": `${Math.max(1, Math.ceil(timeoutMs))}m`,
        ...headers,
      });
    } catch (error) {
      reject(new TransportError(`cannot open stream: ${(error as Error).message}`));
      return;
    }
    const chunks: Buffer[] = [];
    let status: number | undefined;
    let message = "";
    const timer = setTimeout(() => {
      stream.close(8 /* NGHTTP2_CANCEL */);
      reject(new TransportError(`timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    const readStatus = (h: Record<string, string | string[] | undefined>) => {
      const value = h["grpc-status"];
      if (typeof value === "string") {
        status = Number(value);
        message = decodeGrpcMessage(h["grpc-message"] as string | undefined);
      }
    };
    stream.on("response", (h) => {
      const httpStatus = h[":status"];
      if (httpStatus !== 200 && h["grpc-status"] === undefined) {
        clearTimeout(timer);
        stream.close(8);
        reject(new TransportError(`HTTP status ${httpStatus}`));
        return;
      }
      readStatus(h);
    });
    stream.on("trailers", readStatus);
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("error", () => {});
    stream.on("close", () => {
      clearTimeout(timer);
      if (status === undefined) {
        reject(new TransportError(`stream closed without status (code ${stream.rstCode})`));
        return;
      }
      const body = Buffer.concat(chunks);
      resolve({ status, message, data: status === 0 ? (firstMessage(body) ?? Buffer.alloc(0)) : Buffer.alloc(0) });
    });
    stream.end(frameMessage(request));
  });
}
