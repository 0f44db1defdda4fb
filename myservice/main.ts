import { loadConfigOrExit } from "../common/env.js";
import { ipv4AnyHost, listenOn } from "../common/listen.js";
import { createLogger } from "../common/logger.js";
import { loadConfig } from "./config.js";
import { createMyServiceServer } from "./server.js";

const config = loadConfigOrExit(loadConfig);

const logger = createLogger({ name: "myservice", level: config.logLevel, format: config.logFormat }).child({
  pod: config.podName,
});
const instance = createMyServiceServer(config, logger);

void instance.shutdownFlushed.then(async (sessionId) => {
  logger.info({ sessionId }, "shutdown reply flushed; exiting with code 0");
  await instance.close();
  logger.flush();
  process.exit(0);
});

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    logger.info({ signal }, "stopping");
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
  logger.info({ port: bound.port, bootId: instance.bootId }, `myservice ${config.podName} listening on ${bound.address}:${bound.port}`);
} catch (error) {
  logger.fatal({ err: error }, "cannot listen");
  process.exit(1);
}
