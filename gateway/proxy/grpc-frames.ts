/**
 * Follows the gRPC length-prefixed message framing (1 flag byte + 4-byte big-endian length)
 * across arbitrary DATA chunks without copying payloads, and reports the first message
 * whose declared length exceeds the limit — before its payload is forwarded or buffered.
 */
export class GrpcFrameMeter {
  /** Bytes of the current payload still to come. */
  private remaining = 0;
  /** Bytes of the 5-byte prefix seen so far (0 = expecting a new prefix). */
  private prefixSeen = 0;
  private declared = 0;
  /** Messages whose prefix was read completely. */
  messages = 0;

  constructor(private readonly limit: number) {}

  /** Feeds a chunk; returns the oversized length if one is declared in it, else `undefined`. */
  push(chunk: Uint8Array): number | undefined {
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, n - i);
        this.remaining -= take;
        i += take;
        continue;
      }
      // Reading the prefix: byte 0 is the flag, bytes 1..4 the length.
      const byte = chunk[i] as number;
      if (this.prefixSeen > 0) this.declared = this.declared * 256 + byte;
      else this.declared = 0;
      this.prefixSeen++;
      i++;
      if (this.prefixSeen === 5) {
        this.prefixSeen = 0;
        this.messages++;
        if (this.declared > this.limit) return this.declared;
        this.remaining = this.declared;
      }
    }
    return undefined;
  }

  /** True when the stream ended between messages (no partial prefix or payload). */
  get atBoundary(): boolean {
    return this.remaining === 0 && this.prefixSeen === 0;
  }
}

/** Frames one serialized message as a gRPC length-prefixed message. */
export function frameMessage(message: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + message.length);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}

/** Takes the first complete uncompressed message out of a gRPC body; `undefined` if none. */
export function firstMessage(body: Buffer): Buffer | undefined {
  if (body.length < 5 || body[0] !== 0) return undefined;
  const length = body.readUInt32BE(1);
  if (body.length < 5 + length) return undefined;
  return body.subarray(5, 5 + length);
}

/** Percent-encodes a grpc-message value (gRPC over HTTP/2 spec). */
export function encodeGrpcMessage(message: string): string {
  return encodeURIComponent(message).replace(/%20/g, " ");
}

/** Decodes a grpc-message value; malformed escapes are returned as they are. */
export function decodeGrpcMessage(value: string | undefined): string {
  if (value === undefined) return "";
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}
