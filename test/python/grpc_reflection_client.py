#!/usr/bin/python3
"""A grpcurl-style client that is not ours: gRPC server reflection from Python.

Uses only Debian's python3-grpcio and python3-protobuf (no reflection module, no generated
code, no .proto files): the reflection request is encoded by hand (a few protobuf fields),
the response decoded by a small wire-format reader, and the returned FileDescriptorProtos are
loaded into a DescriptorPool to describe symbols and to call methods dynamically.

Usage:
  grpc_reflection_client.py ADDR list [v1|v1alpha]
  grpc_reflection_client.py ADDR describe SYMBOL [v1|v1alpha]
  grpc_reflection_client.py ADDR call SERVICE/METHOD JSON [key=value ...] [--max-messages N] [--timeout S]
ADDR is host:port, [::1]:port for IPv6.
list and describe print one JSON document. call prints the reply as one JSON document for a
unary method, and one JSON document per line, as each message arrives, for a server stream
(Subscribe); --max-messages N cancels the stream after N messages (exit 0). --timeout is the
call's deadline in seconds: 10 for unary calls, none for streams unless given.
An error is printed on stderr as JSON {"code", "details", "statusDetails"}: statusDetails are the
messages of grpc-status-details-bin (e.g. google.rpc.RetryInfo), decoded with descriptors
from reflection, as grpcurl shows them.
It cannot call client-streaming or bidirectional methods (exit 2 says so).
Exit codes: 0 ok, 1 reflection or call error (message on stderr), 2 usage.
"""
import json
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

from protowire import fields, string_field


class ReflectionError(Exception):
    pass


def reflect(channel, version, requests):
    """Sends reflection requests on one stream; returns the decoded responses."""
    method = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    replies = []
    for raw in method(iter(requests), timeout=10):
        reply = {"files": []}
        for number, value in fields(raw):
            if number == 4:  # file_descriptor_response
                reply["files"] += [v for n, v in fields(value) if n == 1]
            elif number == 6:  # list_services_response
                reply["services"] = [
                    dict(fields(service)).get(1, b"").decode() for n, service in fields(value) if n == 1
                ]
            elif number == 7:  # error_response
                error = dict(fields(value))
                raise ReflectionError(f"reflection error {error.get(1, 0)}: {error.get(2, b'').decode()}")
        replies.append(reply)
    return replies


def list_services(channel, version):
    return reflect(channel, version, [string_field(7, "")])[0]["services"]


def files_for_symbol(channel, version, symbol):
    """FileDescriptorProtos of the file declaring `symbol` and of everything it imports."""
    protos = {}
    pending = [string_field(4, symbol)]
    while pending:
        replies = reflect(channel, version, pending)
        pending = []
        for reply in replies:
            for raw in reply["files"]:
                fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
                protos[fd.name] = fd
        for fd in list(protos.values()):
            for dep in fd.dependency:
                if dep not in protos:
                    pending.append(string_field(3, dep))  # file_by_filename
    return protos


def build_pool(protos):
    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add(name):
        if name in added:
            return
        for dep in protos[name].dependency:
            add(dep)
        pool.Add(protos[name])
        added.add(name)

    for name in protos:
        add(name)
    return pool


def message_class(desc):
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(desc.file.pool).GetPrototype(desc)


def describe(channel, version, symbol):
    protos = files_for_symbol(channel, version, symbol)
    pool = build_pool(protos)
    out = {"files": sorted(protos)}
    try:
        service = pool.FindServiceByName(symbol)
        out["service"] = {
            "name": service.full_name,
            "file": service.file.name,
            "methods": [
                {
                    "name": m.name,
                    "input": m.input_type.full_name,
                    "output": m.output_type.full_name,
                    "clientStreaming": bool(getattr(m, "client_streaming", False)),
                    "serverStreaming": bool(getattr(m, "server_streaming", False)),
                }
                for m in service.methods
            ],
        }
        return out
    except KeyError:
        pass
    try:
        message = pool.FindMessageTypeByName(symbol)
        out["message"] = {
            "name": message.full_name,
            "file": message.file.name,
            "fields": [
                {
                    "name": f.name,
                    "number": f.number,
                    "type": f.message_type.full_name if f.message_type else f.type,
                }
                for f in message.fields
            ],
        }
        return out
    except KeyError:
        pass
    service_name, _, method_name = symbol.rpartition(".")
    method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
    out["method"] = {"name": method.full_name, "input": method.input_type.full_name, "output": method.output_type.full_name}
    return out


class UsageError(Exception):
    pass


def call(channel, version, path, body, metadata, max_messages=None, timeout=None):
    """Calls a unary or server-streaming method; yields each reply as a dict."""
    service_name, _, method_name = path.strip("/").partition("/")
    pool = build_pool(files_for_symbol(channel, version, service_name))
    method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
    if getattr(method, "client_streaming", False):
        raise UsageError(f"{method.full_name} is client-streaming or bidirectional: this helper cannot call it")
    request_class = message_class(method.input_type)
    response_class = message_class(method.output_type)
    request = json_format.Parse(body, request_class())
    streaming = bool(getattr(method, "server_streaming", False))
    stub = (channel.unary_stream if streaming else channel.unary_unary)(
        f"/{service_name}/{method_name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    if not streaming:
        yield json.loads(json_format.MessageToJson(stub(request, metadata=metadata, timeout=timeout or 10)))
        return
    stream = stub(request, metadata=metadata, timeout=timeout)
    count = 0
    try:
        for reply in stream:
            yield json.loads(json_format.MessageToJson(reply))
            count += 1
            if max_messages is not None and count >= max_messages:
                break
    finally:
        stream.cancel()


def status_details(channel, version, error):
    """The messages of an error's grpc-status-details-bin, decoded with reflection's descriptors."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    if not raw:
        return []
    protos = files_for_symbol(channel, version, "google.rpc.Status")
    status = message_class(build_pool(protos).FindMessageTypeByName("google.rpc.Status")).FromString(raw)
    out = []
    for detail in status.details:
        type_name = detail.type_url.rpartition("/")[2]
        try:
            protos.update(files_for_symbol(channel, version, type_name))
            cls = message_class(build_pool(protos).FindMessageTypeByName(type_name))
            decoded = json.loads(json_format.MessageToJson(cls.FromString(detail.value)))
            out.append({"@type": detail.type_url, **decoded})
        except (ReflectionError, KeyError):
            out.append({"@type": detail.type_url, "value": detail.value.hex()})
    return out


def take_option(args, name, convert):
    """Removes `--name VALUE` from args; returns the converted value or None."""
    if name not in args:
        return None
    i = args.index(name)
    if i + 1 >= len(args):
        raise UsageError(f"{name} needs a value")
    value = args[i + 1]
    del args[i : i + 2]
    return convert(value)


def main(argv):
    args = argv[1:]
    try:
        max_messages = take_option(args, "--max-messages", int)
        timeout = take_option(args, "--timeout", float)
    except (UsageError, ValueError) as error:
        print(str(error), file=sys.stderr)
        return 2
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    address, command, rest = args[0], args[1], args[2:]
    version = "v1"
    with grpc.insecure_channel(address) as channel:
        try:
            if command == "list":
                version = rest[0] if rest else version
                result = list_services(channel, version)
            elif command == "describe" and rest:
                version = rest[1] if len(rest) > 1 else version
                result = describe(channel, version, rest[0])
            elif command == "call" and len(rest) >= 2:
                metadata = [tuple(kv.split("=", 1)) for kv in rest[2:]]
                for reply in call(channel, version, rest[0], rest[1], metadata, max_messages, timeout):
                    print(json.dumps(reply), flush=True)
                return 0
            else:
                print(__doc__, file=sys.stderr)
                return 2
        except UsageError as error:
            print(str(error), file=sys.stderr)
            return 2
        except ReflectionError as error:
            print(str(error), file=sys.stderr)
            return 1
        except grpc.RpcError as error:
            report = {"code": error.code().name, "details": error.details()}
            try:
                report["statusDetails"] = status_details(channel, version, error)
            except (ReflectionError, grpc.RpcError) as failure:
                report["statusDetails"] = f"not decoded: {failure}"
            print(json.dumps(report), file=sys.stderr)
            return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
