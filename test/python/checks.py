"""Shared by the Python test clients: one printed line per check, a count of the failed ones."""
import sys

failures = 0


def check(what, condition, detail=""):
    """Prints `ok` or `FAILED` with what was checked; counts the failures."""
    global failures
    print(("ok     " if condition else "FAILED ") + what + ((" — " + detail) if detail else ""))
    if not condition:
        failures += 1


def text(message, number):
    """A string field of a message decoded by protowire.fields (empty when absent)."""
    return message.get(number, b"").decode()


def finish():
    """Prints the count of failed checks and exits 1 if any failed."""
    print("%d checks failed" % failures)
    sys.exit(1 if failures else 0)


def raw_unary(channel, path):
    """A unary method of `channel` taking and returning raw bytes (messages encoded by hand)."""
    return channel.unary_unary(path, request_serializer=_raw, response_deserializer=_raw)


def raw_stream(channel, path):
    """A server-streaming method of `channel` taking and returning raw bytes."""
    return channel.unary_stream(path, request_serializer=_raw, response_deserializer=_raw)


def _raw(data):
    return data
