import type { SecureContextOptions } from "node:tls";
import { ConfigError } from "../common/env.js";
import { loadClientTls, loadServerTls, type ServerTlsMaterial, TlsFileError } from "../common/tls.js";
import {
  hmacSigningKey,
  KeyError,
  loadPreviousKey,
  loadPrivateKeyFile,
  type SigningKey,
  type VerificationKey,
} from "../common/token-keys.js";
import { minSecretBytes } from "../common/tokens.js";
import type { GatewayConfig } from "./config.js";

/** What the gateway reads from key and certificate files at start. */
export interface KeyMaterial {
  /** The key tokens are signed with (Login, internal calls). */
  readonly signing: SigningKey;
  /** Every key tokens are verified with: the signing key's, then `JWT_PREVIOUS_KEYS`. */
  readonly verification: readonly VerificationKey[];
  /** The front door's certificate, key and client CA, when TLS is on. */
  readonly tls: ServerTlsMaterial | undefined;
  /** CA and client certificate towards instances, when TLS to instances is on. */
  readonly upstreamTls: SecureContextOptions | undefined;
}

/** Variable names of the upstream TLS files, for messages. */
export const upstreamTlsVariables = { ca: "UPSTREAM_TLS_CA_FILE", cert: "UPSTREAM_TLS_CERT_FILE", key: "UPSTREAM_TLS_KEY_FILE" } as const;

/**
 * Reads the token keys and TLS files the configuration names and checks them (a key of a
 * supported type, certificates matching their keys and valid now); throws a `ConfigError`
 * listing every problem, like `loadConfig`.
 */
export function loadKeyMaterial(config: GatewayConfig, nowMs: number = Date.now()): KeyMaterial {
  const problems: string[] = [];
  const attempt = <T>(load: () => T): T | undefined => {
    try {
      return load();
    } catch (error) {
      if (error instanceof TlsFileError) problems.push(...error.problems);
      else if (error instanceof KeyError) problems.push(error.message);
      else throw error;
      return undefined;
    }
  };
  const signing =
    config.jwtPrivateKeyFile !== undefined
      ? attempt(() => loadPrivateKeyFile(config.jwtPrivateKeyFile as string))
      : hmacSigningKey(config.jwtSecret ?? "");
  const verification: VerificationKey[] = signing === undefined ? [] : [signing.verification];
  for (const entry of config.jwtPreviousKeys) {
    for (const key of attempt(() => loadPreviousKey(entry, minSecretBytes)) ?? []) {
      if (!verification.some((k) => k.kid === key.kid)) verification.push(key);
    }
  }
  const tls = config.tls === undefined ? undefined : attempt(() => loadServerTls(config.tls as NonNullable<GatewayConfig["tls"]>, nowMs));
  const upstreamTls =
    config.upstreamTls === undefined
      ? undefined
      : attempt(() => loadClientTls(config.upstreamTls as NonNullable<GatewayConfig["upstreamTls"]>, upstreamTlsVariables, nowMs));
  if (problems.length > 0 || signing === undefined) throw new ConfigError("gateway", problems);
  return { signing, verification, tls, upstreamTls };
}
