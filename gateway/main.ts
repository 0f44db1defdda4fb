import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { devJwtSecret } from "../common/dev-defaults.js";
import { loadConfigOrExit } from "../common/env.js";
import { dualStackHost } from "../common/listen.js";
import { createLogger } from "../common/logger.js";
import { loadUserStore } from "./auth/user-store.js";
import { loadConfig } from "./config.js";
import { loadKeyMaterial } from "./key-material.js";
import { createLeaseStore } from "./leases/create-lease-store.js";
import { createGateway } from "./server.js";

const config = loadConfigOrExit(loadConfig);
const material = loadConfigOrExit(() => loadKeyMaterial(config));
const logger = createLogger({ name: "gateway", level: config.logLevel, format: config.logFormat });

let users: ReturnType<typeof loadUserStore>;
try {
  users = loadUserStore(config.usersFile);
} catch (error) {
  process.stderr.write(`invalid gateway configuration:\n  - USERS_FILE: ${(error as Error).message}\n`);
  process.exit(2);
}
if (config.jwtSecret === devJwtSecret) logger.warn("JWT_SECRET is the development secret: never use it in production");
if (config.leaseDbUrl === undefined && config.leaseDbPath !== ":memory:") mkdirSync(dirname(config.leaseDbPath), { recursive: true });

if (material.signing.alg !== "HS256") {
  logger.info(
    { alg: material.signing.alg, kid: material.signing.kid, verifies: material.verification.length },
    "tokens signed with an asymmetric key",
  );
}
if (material.tls !== undefined)
  logger.info({ certificate: material.tls.summary, clientAuth: config.tls?.clientAuth }, "front door speaks TLS");
if (config.upstreamTls !== undefined)
  logger.info({ serverName: config.upstreamTls.serverName, mtls: config.upstreamTls.certFile !== undefined }, "TLS to instances");
try {
  const store = await createLeaseStore(config, logger);
  const gateway = createGateway(config, { logger, users, store, material });
  const { address, port } = await gateway.start();
  const leases = await store.leases().then(
    (all) => all.length,
    () => undefined,
  );
  logger.info(
    { port, instances: gateway.pool.addresses().length, leases, store: store.engine, gatewayId: config.gatewayId },
    `gateway listening on ${address}:${port}${address === dualStackHost ? " (IPv6 and IPv4)" : ""}`,
  );
  handleSignals(gateway);
} catch (error) {
  logger.fatal({ err: error }, "gateway failed to start");
  process.exit(1);
}

function handleSignals(gateway: ReturnType<typeof createGateway>): void {
  let stopping = false;
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, "stopping");
      setTimeout(() => process.exit(0), 3000).unref();
      void gateway.close().then(() => {
        logger.flush();
        process.exit(0);
      });
    });
  }
}
