#!/usr/bin/python3
"""One unary gRPC call from Python grpcio (C core) with a request given as hex bytes.

Usage: raw_call.py ADDR /package.Service/Method HEX [key=value ...]
ADDR may be an IPv6 literal in brackets ([::1]:10000). A metadata value `@N` stands for N
characters "s" (too long for a command line otherwise). Prints one JSON document:
{"code": "OK" | status name, "details": ..., "response": hex, "ms": elapsed milliseconds}.
Exits 0 whatever the status (the caller checks it), 2 on usage errors.
"""
import json
import sys
import time

import grpc


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    address, path, body = argv[1], argv[2], bytes.fromhex(argv[3])
    metadata = []
    for kv in argv[4:]:
        key, _, value = kv.partition("=")
        metadata.append((key, "s" * int(value[1:]) if value.startswith("@") else value))
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        started = time.monotonic()
        try:
            reply = call(body, metadata=metadata, timeout=10)
            result = {"code": "OK", "details": "", "response": reply.hex()}
        except grpc.RpcError as error:
            result = {"code": error.code().name, "details": error.details(), "response": ""}
        result["ms"] = round((time.monotonic() - started) * 1000)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
