import { loadConfigOrExit } from "../common/env.js";
import { createLogger } from "../common/logger.js";
import { loadConfig } from "./config.js";
import { createMyServiceServer } from "./server.js";

const config = loadConfigOrExit(loadConfig);

const logger = createLogger({ name: "myservice", level: config.logLevel, format: config.logFormat }).child({
  pod: config.podName,
});
const instance = createMyServiceServer(config, logger);

instance.server.on("error", (error) => {
  logger.fatal({ err: error }, "cannot listen");
  process.exit(1);
});
instance.server.listen(config.port, config.host, () => {
  const address = instance.server.address();
  const port = typeof address === "object" && address !== null ? address.port : config.port;
  logger.info({ port, bootId: instance.bootId }, `myservice ${config.podName} listening on ${config.host}:${port}`);
});

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
