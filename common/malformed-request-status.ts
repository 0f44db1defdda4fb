import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { encodeEnvelope, type UniversalHandler, type UniversalServerResponse } from "@connectrpc/connect/protocol";
import {
  codeToHttpStatus,
  endStreamFlag,
  endStreamFromJson,
  endStreamToJson,
  errorFromJsonBytes,
  errorToJsonBytes,
} from "@connectrpc/connect/protocol-connect";
import { findTrailerError, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { trailerFlag, trailerParse, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";

/** What a client hears when its request body is not a valid message of the method's input type. */
export function malformedRequestMessage(typeName: string): string {
  return `request is not a valid ${typeName} message`;
}

/** A request answered INVALID_ARGUMENT because its body could not be decoded. */
export interface MalformedRequest {
  /** Request path, `/<service>/<method>`. */
  readonly path: string;
  /** Full name of the input message type. */
  readonly typeName: string;
  /** The decoder's complaint, e.g. `premature EOF`: for the log, never for the client. */
  readonly reason: string;
  readonly header: Headers;
}

/** Options of `withMalformedRequestStatus`. */
export interface MalformedRequestOptions {
  /** Called once per malformed request (to log it). */
  readonly onMalformed?: (request: MalformedRequest) => void;
}

const parseBinaryPrefix = "parse binary: ";

/**
 * connect-node answers a request whose body is not valid protobuf with INTERNAL
 * `parse binary: <reason>`: the decoder's words, and a server fault by its code. It is the
 * client's fault, so it is answered INVALID_ARGUMENT `request is not a valid <type> message`
 * instead, and the reason goes to `onMalformed` (the log).
 *
 * Connect decodes a unary request before any interceptor runs, so no interceptor can see
 * this error: the routes' handlers are wrapped instead, and the status connect already encoded
 * is re-encoded with connect's own codecs, for each protocol: gRPC (trailers), gRPC-Web (trailer
 * frame), Connect unary (JSON error, HTTP status) and Connect streaming (end-of-stream frame).
 * Other responses pass through unchanged. See docs/decisions/0032-malformed-requests.md.
 */
export function withMalformedRequestStatus(
  routes: (router: ConnectRouter) => void,
  options: MalformedRequestOptions = {},
): (router: ConnectRouter) => void {
  return (router) => {
    routes(router);
    for (let i = 0; i < router.handlers.length; i++) {
      router.handlers[i] = wrapHandler(router.handlers[i] as UniversalHandler, options);
    }
  };
}

/** The decoder's complaint when `error` is connect's failure to decode a request body. */
function decodeFailure(error: ConnectError | undefined): string | undefined {
  if (error === undefined || error.code !== Code.Internal || !error.rawMessage.startsWith(parseBinaryPrefix)) return undefined;
  return error.rawMessage.slice(parseBinaryPrefix.length);
}

function wrapHandler(handler: UniversalHandler, options: MalformedRequestOptions): UniversalHandler {
  const typeName = handler.method.input.typeName;
  // Unary and server-streaming methods decode their one request before the handler resolves.
  const readsOneMessage = handler.method.methodKind === "unary" || handler.method.methodKind === "server_streaming";
  const wrapped = async (request: Parameters<UniversalHandler>[0]): Promise<UniversalServerResponse> => {
    const response = await handler(request);
    let reported = false;
    /** The replacement for `error` when it is a decode failure (reported once), else `undefined`. */
    const replace = (error: ConnectError | undefined): ConnectError | undefined => {
      const reason = decodeFailure(error);
      if (reason === undefined) return undefined;
      if (!reported) {
        reported = true;
        options.onMalformed?.({ path: handler.requestPath, typeName, reason, header: request.header });
      }
      return new ConnectError(malformedRequestMessage(typeName), Code.InvalidArgument);
    };
    const type = response.header?.get("content-type") ?? "";
    if (response.trailer !== undefined) return grpcResponse(response, response.trailer, replace, readsOneMessage);
    if (type.startsWith("application/grpc-web")) return mapFrames(response, trailerFlag, (data) => grpcWebTrailer(data, replace));
    if (type.startsWith("application/connect+")) return mapFrames(response, endStreamFlag, (data) => connectEndStream(data, replace));
    if (response.status !== 200 && type.startsWith("application/json")) return connectUnaryError(response, replace);
    return response;
  };
  return Object.assign(wrapped, handler);
}

type Replace = (error: ConnectError | undefined) => ConnectError | undefined;

/**
 * gRPC: the status is in the trailer. A method that reads one request has decoded it (or failed
 * to) before the handler resolved, so the body is left alone (no cost per message); a method
 * that reads a stream may fail later, so its trailer is checked again once the body ends.
 */
function grpcResponse(
  response: UniversalServerResponse,
  trailer: Headers,
  replace: Replace,
  readsOneMessage: boolean,
): UniversalServerResponse {
  const fix = () => {
    const replacement = replace(findTrailerError(trailer));
    if (replacement !== undefined) {
      trailer.delete("grpc-status-details-bin");
      setTrailerStatus(trailer, replacement);
    }
  };
  fix();
  const body = response.body;
  if (body === undefined || readsOneMessage) return response;
  return {
    ...response,
    body: (async function* () {
      try {
        yield* body;
      } finally {
        fix();
      }
    })(),
  };
}

/** Streaming protocols: the status travels in a final frame with `flag` set. */
function mapFrames(
  response: UniversalServerResponse,
  flag: number,
  fix: (data: Uint8Array) => Uint8Array | undefined,
): UniversalServerResponse {
  const body = response.body;
  if (body === undefined) return response;
  return {
    ...response,
    body: (async function* () {
      for await (const chunk of body) {
        // One frame per chunk (connect writes each envelope on its own); compressed ones are left alone.
        const length = chunk.length >= 5 ? new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength).getUint32(1) : -1;
        const flags = chunk[0] ?? 0;
        if (length === chunk.length - 5 && (flags & flag) === flag && (flags & 0b1) === 0) {
          const data = fix(chunk.subarray(5));
          yield data === undefined ? chunk : encodeEnvelope(flags, data);
        } else {
          yield chunk;
        }
      }
    })(),
  };
}

function grpcWebTrailer(data: Uint8Array, replace: Replace): Uint8Array | undefined {
  const trailer = trailerParse(data);
  const replacement = replace(findTrailerError(trailer));
  if (replacement === undefined) return undefined;
  trailer.delete("grpc-status-details-bin");
  return trailerSerialize(setTrailerStatus(trailer, replacement));
}

function connectEndStream(data: Uint8Array, replace: Replace): Uint8Array | undefined {
  const end = endStreamFromJson(data);
  const replacement = replace(end.error);
  if (replacement === undefined) return undefined;
  return new TextEncoder().encode(JSON.stringify(endStreamToJson(end.metadata, replacement, undefined)));
}

/** Connect unary: the error is the JSON body, its code also the HTTP status. */
async function connectUnaryError(response: UniversalServerResponse, replace: Replace): Promise<UniversalServerResponse> {
  if (response.body === undefined || response.header?.has("content-encoding")) return response;
  const chunks: Uint8Array[] = [];
  for await (const chunk of response.body) chunks.push(chunk);
  const bytes = Buffer.concat(chunks);
  const fallback = new ConnectError("", Code.Unknown);
  const replacement = replace(errorFromJsonBytes(bytes, undefined, fallback));
  const body = replacement === undefined ? bytes : errorToJsonBytes(replacement, undefined);
  const header = new Headers(response.header);
  header.set("content-length", String(body.byteLength));
  return {
    ...response,
    status: replacement === undefined ? response.status : codeToHttpStatus(replacement.code),
    header,
    body: (async function* () {
      yield body;
    })(),
  };
}
