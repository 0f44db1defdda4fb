import type { Http2SecureServer } from "node:http2";
import { loadConfigOrExit } from "../common/env.js";
import { ipv4AnyHost, listenOn } from "../common/listen.js";
import { createLogger } from "../common/logger.js";
import { loadServerTls, watchTlsFiles } from "../common/tls.js";
import { loadConfig } from "./config.js";
import { createJwksClient } from "./jwks-client.js";
import { loadInstanceKeyMaterial } from "./key-material.js";
import { createMyServiceServer } from "./server.js";

const config = loadConfigOrExit(loadConfig);
const material = loadConfigOrExit(() => loadInstanceKeyMaterial(config));
const logger = createLogger({ name: "myservice", level: config.logLevel, format: config.logFormat }).child({
  pod: config.podName,
});
if (config.jwtSecret !== undefined && (config.jwtPublicKeyFiles.length > 0 || config.jwksUrl !== undefined)) {
  logger.warn("JWT_SECRET is set beside public keys: this instance can sign HS256 tokens; remove it once the migration is done");
}
const jwks =
  config.jwksUrl === undefined
    ? undefined
    : createJwksClient({
        url: config.jwksUrl,
        ca: material.jwksCa,
        cooldownMs: config.jwksRefreshCooldownMs,
        refreshIntervalMs: config.jwksRefreshIntervalMs,
        logger,
      });
const { tls } = config;
const instance = createMyServiceServer(
  {
    ...config,
    keys: material.keys,
    jwks,
    tls: tls !== undefined && material.tls !== undefined ? { config: tls, material: material.tls } : undefined,
  },
  logger,
);
let stopWatching = () => {};
void instance.shutdownFlushed.then(async (sessionId) => {
  logger.info({ sessionId }, "shutdown reply flushed; exiting with code 0");
  stopWatching();
  jwks?.stop();
  await instance.close();
  logger.flush();
  process.exit(0);
});
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    logger.info({ signal }, "stopping");
    stopWatching();
    jwks?.stop();
    void instance.close().then(() => {
      logger.flush();
      process.exit(0);
    });
    setTimeout(() => process.exit(0), 2000).unref();
  });
}

try {
  const bound = await listenOn(instance.server, config.port, config.host, (reason) =>
    logger.warn({ reason: reason.message }, `no IPv6 on this host: listening on ${ipv4AnyHost} (IPv4 only) instead of ${config.host}`),
  );
  logger.info(
    { port: bound.port, bootId: instance.bootId, tls: tls !== undefined, clientAuth: tls?.clientAuth },
    `myservice ${config.podName} listening on ${bound.address}:${bound.port}`,
  );
  jwks?.start();
  if (tls !== undefined) {
    const files = [tls.certFile, tls.keyFile, ...(tls.clientCaFile !== undefined ? [tls.clientCaFile] : [])];
    const reload = () => {
      const next = loadServerTls(tls);
      (instance.server as Http2SecureServer).setSecureContext(next.context);
      return next.summary;
    };
    stopWatching = watchTlsFiles(files, tls.reloadIntervalMs, reload, logger, "instance TLS");
  }
} catch (error) {
  logger.fatal({ err: error }, "cannot listen");
  process.exit(1);
}
