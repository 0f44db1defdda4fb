"""The seed flow of the platform with a client that is not ours: Python grpcio (C core).

Usage: /usr/bin/python3 test/python/seed_flow.py HOST:PORT INSTANCES [CA_FILE]
With CA_FILE the channel is TLS, and the gateway's certificate must chain to that CA.
Four (INSTANCES + 1) clients log in; INSTANCES of them occupy every instance with Echo; the
last gets RESOURCE_EXHAUSTED "all instances are busy". Then Subscribe, errors, Shutdown.
Messages are encoded by hand (all fields used are strings, int32 and a Timestamp), so no
generated code is needed. Exits 0 when every check holds, prints one line per check.
"""
import sys
import uuid

import grpc

from checks import check, finish, raw_stream, raw_unary, text
from protowire import fields, string_field

SERVICE = "/my_service.MyServiceAPI/"


def encode(values):
    """values: {field number: str}"""
    return b"".join(string_field(number, value) for number, value in values.items())


def decode(data):
    """Returns {field number: value}: bytes for length-delimited fields, int for varints."""
    return dict(fields(data))




def main():
    target, instances = sys.argv[1], int(sys.argv[2])
    if len(sys.argv) > 3:
        with open(sys.argv[3], "rb") as ca:
            channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca.read()))
    else:
        channel = grpc.insecure_channel(target)
    login = raw_unary(channel, SERVICE + "Login")
    echo = raw_unary(channel, SERVICE + "MyServiceEcho")
    subscribe = raw_stream(channel, SERVICE + "MyServiceSubscribe")
    shutdown = raw_unary(channel, SERVICE + "MyServiceShutdown")

    sessions = []
    for i in range(instances + 1):
        sid = "py-%s-%d" % (uuid.uuid4().hex[:8], i)
        reply = decode(login(encode({1: "TestUser", 2: "TestPassword", 3: sid}), timeout=10))
        token = text(reply, 1)
        check("Login %s" % sid, token.count(".") == 2 and text(reply, 3) == "admin" and 2 in reply)
        sessions.append((sid, [("authorization", token), ("session-id", sid)]))

    pods = []
    for sid, md in sessions[:instances]:
        r = decode(echo(encode({1: "hello"}), metadata=md, timeout=10))
        pods.append(text(r, 3))
        check("Echo %s -> %s" % (sid, text(r, 3)),
              text(r, 1) == "hello" and text(r, 2) == "my_service" and text(r, 4) == sid and text(r, 5) == sid
              and r.get(6, 0) == 0 and text(r, 7) == "MyServiceEcho")
    check("every session on its own pod", len(set(pods)) == instances, ",".join(pods))

    try:
        echo(encode({1: "x"}), metadata=sessions[instances][1], timeout=10)
        check("last session refused", False, "it succeeded")
    except grpc.RpcError as e:
        check("last session: RESOURCE_EXHAUSTED 'all instances are busy'",
              e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and e.details() == "all instances are busy",
              "%s %r" % (e.code(), e.details()))
        # The retry hint: a google.rpc.Status in grpc-status-details-bin (what grpc-status's
        # rpc_status.from_call reads) carrying a google.rpc.RetryInfo, and retry-after-ms.
        trailers = dict(e.trailing_metadata() or ())
        status = dict(fields(trailers.get("grpc-status-details-bin", b"")))
        detail = dict(fields(status.get(3, b"")))
        delay = dict(fields(dict(fields(detail.get(2, b""))).get(1, b"")))
        delay_ms = delay.get(1, 0) * 1000 + delay.get(2, 0) // 1_000_000
        check("status details: code 8, the same message, RetryInfo %d ms = retry-after-ms" % delay_ms,
              status.get(1) == 8 and status.get(2) == b"all instances are busy"
              and detail.get(1) == b"type.googleapis.com/google.rpc.RetryInfo"
              and delay_ms > 0 and str(delay_ms) == trailers.get("retry-after-ms"),
              repr(trailers))

    for metadata, code, message in [
        ([("authorization", "garbage")], grpc.StatusCode.UNAUTHENTICATED, "missing session-id"),
        ([("session-id", sessions[0][0])], grpc.StatusCode.UNAUTHENTICATED, "missing or invalid token"),
    ]:
        try:
            echo(encode({1: "x"}), metadata=metadata, timeout=10)
            check("refused: %s" % message, False, "it succeeded")
        except grpc.RpcError as e:
            check("%s %r" % (code, message), e.code() == code and e.details() == message, "%s %r" % (e.code(), e.details()))

    sid, md = sessions[0]
    stream = subscribe(encode({1: "s"}), metadata=md, timeout=30)
    got = []
    for message in stream:
        got.append(decode(message))
        if len(got) == 2:
            stream.cancel()
            break
    check("Subscribe: 2 messages, index 0,1, on the session's pod",
          [m.get(6, 0) for m in got] == [0, 1] and all(text(m, 3) == pods[0] and text(m, 7) == "MyServiceSubscribe" for m in got))

    for (sid, md), pod in zip(sessions[:instances], pods):
        r = decode(shutdown(b"", metadata=md, timeout=10))
        check("Shutdown %s -> %s" % (sid, text(r, 1)), text(r, 1) == pod and text(r, 2) == sid and text(r, 5) == "MyServiceShutdown")
    channel.close()
    finish()


if __name__ == "__main__":
    main()
