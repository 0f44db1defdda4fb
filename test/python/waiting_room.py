"""The waiting room (SPEC 11) with a client that is not ours: Python grpcio (C core).

Usage: /usr/bin/python3 test/python/waiting_room.py HOST:PORT INSTANCES
INSTANCES sessions occupy every instance; two more wait with `x-wait-for-instance: 30s`, the
second with a 1 s deadline of its own. The one with the deadline gets DEADLINE_EXCEEDED after
about a second and never an instance; GetPosition shows the other first in line; a Shutdown
frees an instance and the waiter gets it, its initial metadata carrying x-queue-position and
x-queue-wait-ms. Messages are encoded by hand. Exits 0 when every check holds.
"""
import sys
import time
import uuid

import grpc

from checks import check, finish, raw_unary, text
from protowire import fields, string_field

SERVICE = "/my_service.MyServiceAPI/"
WAITING_ROOM = "/mygateway.queue.v1.WaitingRoom/"


def main():
    target, instances = sys.argv[1], int(sys.argv[2])
    channel = grpc.insecure_channel(target)
    login = raw_unary(channel, SERVICE + "Login")
    echo = raw_unary(channel, SERVICE + "MyServiceEcho")
    shutdown = raw_unary(channel, SERVICE + "MyServiceShutdown")
    position = raw_unary(channel, WAITING_ROOM + "GetPosition")

    def session(label):
        sid = "py-wait-%s-%s" % (label, uuid.uuid4().hex[:8])
        reply = dict(fields(login(string_field(1, "TestUser") + string_field(2, "TestPassword") + string_field(3, sid), timeout=10)))
        return sid, [("authorization", text(reply, 1)), ("session-id", sid)]

    holders = [session("holder-%d" % i) for i in range(instances)]
    for sid, md in holders:
        echo(string_field(1, "hold"), metadata=md, timeout=10)
    first = session("first")
    late = session("late")
    wait = [("x-wait-for-instance", "30s")]

    granted = echo.future(string_field(1, "waited"), metadata=first[1] + wait, timeout=30)
    time.sleep(0.3)
    started = time.monotonic()
    try:
        echo(string_field(1, "late"), metadata=late[1] + wait, timeout=1.0)
        check("the waiter with a 1 s deadline", False, "it got an instance")
    except grpc.RpcError as e:
        elapsed = time.monotonic() - started
        check("the waiter with a 1 s deadline: DEADLINE_EXCEEDED after %.3f s" % elapsed,
              e.code() == grpc.StatusCode.DEADLINE_EXCEEDED and 1.0 <= elapsed < 1.5, "%s %r" % (e.code(), e.details()))

    reply = dict(fields(position(b"", metadata=first[1], timeout=10)))
    check("GetPosition: waiting, position 1 of 1", reply.get(1) == 1 and reply.get(2) == 1 and reply.get(3) == 1, repr(reply))

    shutdown(b"", metadata=holders[0][1], timeout=10)
    try:
        reply = dict(fields(granted.result(timeout=30)))
        headers = dict(granted.initial_metadata() or ())
        check("the first waiter got the freed instance: %s" % text(reply, 3),
              text(reply, 4) == first[0] and text(reply, 7) == "MyServiceEcho")
        check("x-queue-position 1, x-queue-wait-ms %s" % headers.get("x-queue-wait-ms"),
              headers.get("x-queue-position") == "1" and int(headers.get("x-queue-wait-ms", "-1")) >= 1000, repr(headers))
    except grpc.RpcError as e:
        check("the first waiter got the freed instance", False, "%s %r" % (e.code(), e.details()))

    try:
        shutdown(b"", metadata=late[1], timeout=10)
        check("the late waiter holds nothing", False, "its Shutdown succeeded")
    except grpc.RpcError as e:
        check("the late waiter holds nothing: Shutdown -> PERMISSION_DENIED 'Server session is not set'",
              e.code() == grpc.StatusCode.PERMISSION_DENIED and e.details() == "Server session is not set", "%s %r" % (e.code(), e.details()))

    for sid, md in [first] + holders[1:]:
        shutdown(b"", metadata=md, timeout=10)
    channel.close()
    finish()


if __name__ == "__main__":
    main()
