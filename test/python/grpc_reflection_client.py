#!/usr/bin/python3
"""A grpcurl-style client that is not ours: gRPC server reflection from Python.

Uses only Debian's python3-grpcio and python3-protobuf (no reflection module, no generated
code, no .proto files): the reflection request is encoded by hand (a few protobuf fields),
the response decoded by a small wire-format reader, and the returned FileDescriptorProtos are
loaded into a DescriptorPool to describe symbols and to call methods dynamically.

Usage (prints one JSON document):
  grpc_reflection_client.py ADDR list [v1|v1alpha]
  grpc_reflection_client.py ADDR describe SYMBOL [v1|v1alpha]
  grpc_reflection_client.py ADDR call SERVICE/METHOD JSON [key=value ...]
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


def call(channel, version, path, body, metadata):
    service_name, _, method_name = path.strip("/").partition("/")
    pool = build_pool(files_for_symbol(channel, version, service_name))
    method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
    request_class = message_class(method.input_type)
    response_class = message_class(method.output_type)
    request = json_format.Parse(body, request_class())
    stub = channel.unary_unary(
        f"/{service_name}/{method_name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    reply = stub(request, metadata=metadata, timeout=10)
    return json.loads(json_format.MessageToJson(reply))


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    address, command, rest = argv[1], argv[2], argv[3:]
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
                result = call(channel, version, rest[0], rest[1], metadata)
            else:
                print(__doc__, file=sys.stderr)
                return 2
        except ReflectionError as error:
            print(str(error), file=sys.stderr)
            return 1
        except grpc.RpcError as error:
            print(json.dumps({"code": error.code().name, "details": error.details()}), file=sys.stderr)
            return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
