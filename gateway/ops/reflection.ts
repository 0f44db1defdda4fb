import { create, type DescFile, type DescMessage, type DescService, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectRouter } from "@connectrpc/connect";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";

type Request = v1.ServerReflectionRequest | v1alpha.ServerReflectionRequest;
type ResponseInit = Omit<MessageInitShape<typeof v1.ServerReflectionResponseSchema>, "originalRequest" | "$typeName">;

/** Files and symbols the reflection service can describe, built once from the served services. */
export interface ReflectionIndex {
  /** Full names of the served services, sorted. */
  readonly services: readonly string[];
  /** A file and its transitive imports (dependencies first), by file name. */
  fileByName(name: string): DescFile | undefined;
  /** The file declaring a fully-qualified symbol: service, method, message, enum or extension. */
  fileBySymbol(symbol: string): DescFile | undefined;
  /** Serialized `FileDescriptorProto` of a file. */
  encoded(file: DescFile): Uint8Array;
}

/**
 * Indexes `services`, their files and every file those import (e.g. google/protobuf/timestamp.proto),
 * plus `messageFiles`: files that declare no served service but whose messages the server puts on the
 * wire (e.g. `google.rpc.RetryInfo` in status details), so a client can decode them too.
 */
export function createReflectionIndex(services: readonly DescService[], messageFiles: readonly DescFile[] = []): ReflectionIndex {
  const files = new Map<string, DescFile>();
  const symbols = new Map<string, DescFile>();
  const encoded = new Map<string, Uint8Array>();
  const addMessage = (file: DescFile, message: DescMessage) => {
    symbols.set(message.typeName, file);
    for (const nested of message.nestedMessages) addMessage(file, nested);
    for (const e of message.nestedEnums) symbols.set(e.typeName, file);
    for (const x of message.nestedExtensions) symbols.set(x.typeName, file);
  };
  const addFile = (file: DescFile) => {
    if (files.has(file.proto.name)) return;
    files.set(file.proto.name, file);
    for (const dep of file.dependencies) addFile(dep);
    for (const service of file.services) {
      symbols.set(service.typeName, file);
      for (const method of service.methods) symbols.set(`${service.typeName}.${method.name}`, file);
    }
    for (const message of file.messages) addMessage(file, message);
    for (const e of file.enums) symbols.set(e.typeName, file);
    for (const x of file.extensions) symbols.set(x.typeName, file);
  };
  for (const service of services) addFile(service.file);
  for (const file of messageFiles) addFile(file);
  return {
    services: services.map((s) => s.typeName).sort(),
    fileByName: (name) => files.get(name),
    fileBySymbol: (symbol) => symbols.get(symbol.startsWith(".") ? symbol.slice(1) : symbol),
    encoded(file) {
      let bytes = encoded.get(file.proto.name);
      if (bytes === undefined) {
        bytes = toBinary(FileDescriptorProtoSchema, file.proto);
        encoded.set(file.proto.name, bytes);
      }
      return bytes;
    },
  };
}

/**
 * The reply to one reflection request. A file is sent with its transitive imports, skipping
 * imports this stream already sent (as grpc-go does); the requested file is always sent.
 */
function answer(index: ReflectionIndex, request: Request, sent: Set<string>): ResponseInit {
  const notFound = (what: string): ResponseInit => ({
    messageResponse: {
      case: "errorResponse",
      value: { errorCode: Code.NotFound, errorMessage: `${what} not found` },
    },
  });
  const withImports = (file: DescFile): ResponseInit => {
    const out: Uint8Array[] = [];
    const visit = (f: DescFile, requested: boolean) => {
      if (!requested && sent.has(f.proto.name)) return;
      sent.add(f.proto.name);
      out.push(index.encoded(f));
      for (const dep of f.dependencies) visit(dep, false);
    };
    visit(file, true);
    return {
      messageResponse: {
        case: "fileDescriptorResponse",
        value: { fileDescriptorProto: out },
      },
    };
  };
  const r = request.messageRequest;
  switch (r.case) {
    case "listServices":
      return {
        messageResponse: {
          case: "listServicesResponse",
          value: { service: index.services.map((name) => ({ name })) },
        },
      };
    case "fileByFilename": {
      const file = index.fileByName(r.value);
      return file === undefined ? notFound(`file ${r.value}`) : withImports(file);
    }
    case "fileContainingSymbol": {
      const file = index.fileBySymbol(r.value);
      return file === undefined ? notFound(`symbol ${r.value}`) : withImports(file);
    }
    case "fileContainingExtension":
      // None of the served files declares extensions.
      return notFound(`extension ${r.value.extensionNumber} of ${r.value.containingType}`);
    case "allExtensionNumbersOfType":
      return index.fileBySymbol(r.value) === undefined
        ? notFound(`type ${r.value}`)
        : {
            messageResponse: {
              case: "allExtensionNumbersResponse",
              value: { baseTypeName: r.value, extensionNumber: [] },
            },
          };
    default:
      return {
        messageResponse: {
          case: "errorResponse",
          value: {
            errorCode: Code.InvalidArgument,
            errorMessage: "empty reflection request",
          },
        },
      };
  }
}

/**
 * gRPC server reflection, v1 and v1alpha (SPEC 9), describing `services` (which should include
 * the two reflection services themselves) and `files` (message-only files the server sends,
 * see `createReflectionIndex`) from the generated file descriptors, so
 * `grpcurl -plaintext host:port list` and `describe` need no proto files, and grpcurl decodes
 * status details such as `google.rpc.RetryInfo`.
 */
export function registerReflectionService(router: ConnectRouter, services: readonly DescService[], files: readonly DescFile[] = []): void {
  const index = createReflectionIndex(services, files);
  router.service(v1.ServerReflection, {
    async *serverReflectionInfo(requests) {
      const sent = new Set<string>();
      for await (const request of requests) {
        const init = answer(index, request, sent);
        yield create(v1.ServerReflectionResponseSchema, {
          ...init,
          validHost: request.host,
          originalRequest: request,
        });
      }
    },
  });
  router.service(v1alpha.ServerReflection, {
    async *serverReflectionInfo(requests) {
      const sent = new Set<string>();
      for await (const request of requests) {
        // The two versions have the same fields and numbers: only the package differs.
        const init = answer(index, request, sent) as MessageInitShape<typeof v1alpha.ServerReflectionResponseSchema>;
        yield create(v1alpha.ServerReflectionResponseSchema, {
          ...init,
          validHost: request.host,
          originalRequest: request,
        });
      }
    },
  });
}

/** The reflection services, to list them among the served services. */
export const reflectionServices: readonly DescService[] = [v1.ServerReflection, v1alpha.ServerReflection];
