import { readFileSync } from "node:fs";
import { ConfigError } from "../common/env.js";
import { loadServerTls, type ServerTlsMaterial, TlsFileError } from "../common/tls.js";
import { hmacSigningKey, KeyError, loadPublicKeyFile, type VerificationKey } from "../common/token-keys.js";
import type { MyServiceConfig } from "./config.js";

/** What an instance reads from key and certificate files at start. */
export interface InstanceKeyMaterial {
  /** Keys known without the JWKS: `JWT_SECRET`'s and those of `JWT_PUBLIC_KEY_FILE`. */
  readonly keys: readonly VerificationKey[];
  /** The instance's certificate, key and client CA, when it serves TLS. */
  readonly tls: ServerTlsMaterial | undefined;
  /** CA for an `https:` JWKS URL. */
  readonly jwksCa: Buffer | undefined;
}

/**
 * Reads the verification keys and TLS files the configuration names and checks them; throws a
 * `ConfigError` listing every problem. A private key where a public one belongs is refused.
 */
export function loadInstanceKeyMaterial(config: MyServiceConfig, nowMs: number = Date.now()): InstanceKeyMaterial {
  const problems: string[] = [];
  const keys: VerificationKey[] = config.jwtSecret !== undefined ? [hmacSigningKey(config.jwtSecret).verification] : [];
  for (const file of config.jwtPublicKeyFiles) {
    try {
      keys.push(...loadPublicKeyFile(file));
    } catch (error) {
      if (!(error instanceof KeyError)) throw error;
      problems.push(error.message);
    }
  }
  let tls: ServerTlsMaterial | undefined;
  if (config.tls !== undefined) {
    try {
      tls = loadServerTls(config.tls, nowMs);
    } catch (error) {
      if (!(error instanceof TlsFileError)) throw error;
      problems.push(...error.problems);
    }
  }
  let jwksCa: Buffer | undefined;
  if (config.jwksCaFile !== undefined) {
    try {
      jwksCa = readFileSync(config.jwksCaFile);
    } catch (error) {
      problems.push(`JWT_JWKS_CA_FILE ${config.jwksCaFile}: cannot read: ${(error as Error).message}`);
    }
  }
  if (problems.length > 0) throw new ConfigError("myservice", problems);
  return { keys, tls, jwksCa };
}
