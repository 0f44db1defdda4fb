import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { createSecureContext, type SecureContextOptions } from "node:tls";
import type { EnvReader } from "./env.js";
import type { Logger } from "./logger.js";

/** Who must present a client certificate: nobody, whoever wants to, or everyone. */
export type ClientAuth = "none" | "optional" | "require";

/** TLS of a server (the gateway's front door, or an instance), read from the environment. */
export interface TlsServerConfig {
  /** `TLS_CERT_FILE`: PEM certificate (leaf first, then intermediates). */
  readonly certFile: string;
  /** `TLS_KEY_FILE`: PEM private key of that certificate. */
  readonly keyFile: string;
  /** `TLS_CLIENT_CA_FILE`: PEM CA certificate(s) client certificates must chain to. Default none. */
  readonly clientCaFile: string | undefined;
  /** `TLS_CLIENT_AUTH`: `none`, `optional` or `require`. Default `require` with a client CA, else `none`. */
  readonly clientAuth: ClientAuth;
  /** `TLS_MIN_VERSION`: `TLSv1.2` or `TLSv1.3`. Default `TLSv1.2`. */
  readonly minVersion: "TLSv1.2" | "TLSv1.3";
  /** `TLS_RELOAD_INTERVAL`: how often the files are read again for a rotation, milliseconds; 0 = never. Default 5 s. */
  readonly reloadIntervalMs: number;
}

/** TLS of a client (the gateway towards instances, an instance fetching the JWKS). */
export interface TlsClientConfig {
  /** PEM CA certificate(s) the server's certificate must chain to. */
  readonly caFile: string;
  /** PEM client certificate to present (mTLS). Default none. */
  readonly certFile: string | undefined;
  /** Its private key. */
  readonly keyFile: string | undefined;
  /** Name the server's certificate must carry (instead of the address's host). Default none. */
  readonly serverName: string | undefined;
}

/**
 * Reads the server TLS variables (`TLS_CERT_FILE`, `TLS_KEY_FILE`, `TLS_CLIENT_CA_FILE`,
 * `TLS_CLIENT_AUTH`, `TLS_MIN_VERSION`), recording problems in `r`; `reloadIntervalMs` is
 * `readTlsReloadInterval`'s.
 * `undefined` when TLS is off (neither file set). Every variable is read in every case, so a
 * stray one is still validated.
 */
export function readTlsServerEnv(r: EnvReader, reloadIntervalMs: number): TlsServerConfig | undefined {
  const certFile = r.optionalString("TLS_CERT_FILE");
  const keyFile = r.optionalString("TLS_KEY_FILE");
  const clientCaFile = r.optionalString("TLS_CLIENT_CA_FILE");
  const auth = r.oneOf<ClientAuth | "">("TLS_CLIENT_AUTH", "", ["none", "optional", "require"]);
  const minVersion = r.oneOf("TLS_MIN_VERSION", "TLSv1.2", ["TLSv1.2", "TLSv1.3"]);
  if ((certFile === undefined) !== (keyFile === undefined)) {
    r.problem("TLS_CERT_FILE and TLS_KEY_FILE go together: set both (TLS on) or neither (cleartext)");
  }
  const clientAuth: ClientAuth = auth === "" ? (clientCaFile !== undefined ? "require" : "none") : auth;
  if (clientAuth !== "none" && clientCaFile === undefined) {
    r.problem(`TLS_CLIENT_AUTH=${clientAuth} needs TLS_CLIENT_CA_FILE (the CA client certificates must chain to)`);
  }
  if (clientCaFile !== undefined && certFile === undefined) r.problem("TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE");
  if (certFile === undefined || keyFile === undefined) return undefined;
  return Object.freeze({ certFile, keyFile, clientCaFile, clientAuth, minVersion, reloadIntervalMs });
}

/** `TLS_RELOAD_INTERVAL`: how often certificate files are read again, milliseconds; 0 = never. Default 5 s. */
export function readTlsReloadInterval(r: EnvReader): number {
  return r.duration("TLS_RELOAD_INTERVAL", 5000, 0, 24 * 3_600_000);
}

/** Files that cannot be used for TLS; `problems` lists each, for the start-up error. */
export class TlsFileError extends Error {
  override readonly name = "TlsFileError";
  constructor(readonly problems: readonly string[]) {
    super(problems.join("; "));
  }
}

/** Validated server material: options for `createSecureContext` and what the log shows of it. */
export interface ServerTlsMaterial {
  readonly context: SecureContextOptions;
  /** Subject, expiry and SHA-256 fingerprint of the leaf certificate. */
  readonly summary: { readonly subject: string; readonly validTo: string; readonly fingerprint256: string };
}

function read(file: string, variable: string, problems: string[]): Buffer | undefined {
  try {
    return readFileSync(file);
  } catch (error) {
    problems.push(`${variable} ${file}: cannot read: ${(error as Error).message}`);
    return undefined;
  }
}

function certificateOf(pem: Buffer, file: string, variable: string, problems: string[]): X509Certificate | undefined {
  try {
    return new X509Certificate(pem);
  } catch {
    problems.push(`${variable} ${file}: not a PEM certificate`);
    return undefined;
  }
}

function checkValidity(cert: X509Certificate, file: string, variable: string, nowMs: number, problems: string[]): void {
  if (Date.parse(cert.validTo) <= nowMs) problems.push(`${variable} ${file}: the certificate expired on ${cert.validTo}`);
  if (Date.parse(cert.validFrom) > nowMs) problems.push(`${variable} ${file}: the certificate is not valid before ${cert.validFrom}`);
}

/** Reads and checks a certificate + key pair: readable, PEM, matching, valid now. */
function certificateAndKey(
  certFile: string,
  keyFile: string,
  names: { cert: string; key: string },
  nowMs: number,
  problems: string[],
): { cert: Buffer; key: Buffer; leaf: X509Certificate } | undefined {
  const cert = read(certFile, names.cert, problems);
  const key = read(keyFile, names.key, problems);
  const leaf = cert === undefined ? undefined : certificateOf(cert, certFile, names.cert, problems);
  let privateKey: KeyObject | undefined;
  if (key !== undefined) {
    try {
      privateKey = createPrivateKey(key);
    } catch {
      problems.push(`${names.key} ${keyFile}: not a PEM private key`);
    }
  }
  if (leaf !== undefined) checkValidity(leaf, certFile, names.cert, nowMs, problems);
  if (leaf !== undefined && privateKey !== undefined && !leaf.checkPrivateKey(privateKey)) {
    problems.push(`${names.key} ${keyFile} does not match the certificate in ${names.cert} ${certFile}`);
  }
  return cert !== undefined && key !== undefined && leaf !== undefined ? { cert, key, leaf } : undefined;
}

function caBundle(file: string, variable: string, problems: string[]): Buffer | undefined {
  const ca = read(file, variable, problems);
  if (ca !== undefined) certificateOf(ca, file, variable, problems);
  return ca;
}

/** The secure context options, or `TlsFileError` when `createSecureContext` refuses them anyway. */
function contextOrProblem(options: SecureContextOptions, problems: string[], what: string): SecureContextOptions {
  if (problems.length === 0) {
    try {
      createSecureContext(options);
    } catch (error) {
      problems.push(`${what}: ${(error as Error).message}`);
    }
  }
  if (problems.length > 0) throw new TlsFileError(problems);
  return options;
}

/**
 * Reads the server's certificate, key and client CA and checks them: readable, PEM, the key
 * matches the certificate, the certificate is valid at `nowMs`. Throws `TlsFileError` listing
 * every problem.
 */
export function loadServerTls(config: TlsServerConfig, nowMs: number = Date.now()): ServerTlsMaterial {
  const problems: string[] = [];
  const pair = certificateAndKey(config.certFile, config.keyFile, { cert: "TLS_CERT_FILE", key: "TLS_KEY_FILE" }, nowMs, problems);
  const ca = config.clientCaFile === undefined ? undefined : caBundle(config.clientCaFile, "TLS_CLIENT_CA_FILE", problems);
  const context = contextOrProblem(
    { cert: pair?.cert, key: pair?.key, ...(ca !== undefined ? { ca } : {}), minVersion: config.minVersion },
    problems,
    "TLS_CERT_FILE/TLS_KEY_FILE",
  );
  const leaf = pair?.leaf as X509Certificate;
  return { context, summary: { subject: leaf.subject.replace(/\n/g, ", "), validTo: leaf.validTo, fingerprint256: leaf.fingerprint256 } };
}

/** Options of a TLS server built from `material` (ALPN, client certificates, minimum version). */
export function serverOptions(config: TlsServerConfig, material: ServerTlsMaterial, alpn: readonly string[]) {
  return {
    ...material.context,
    ALPNProtocols: [...alpn],
    requestCert: config.clientAuth !== "none",
    rejectUnauthorized: config.clientAuth === "require",
  };
}

/**
 * Reads the client side's CA and optional certificate + key (`UPSTREAM_TLS_*`, `variables`
 * names them in messages) and checks them like `loadServerTls`. Throws `TlsFileError`.
 */
export function loadClientTls(
  config: TlsClientConfig,
  variables: { ca: string; cert: string; key: string },
  nowMs: number = Date.now(),
): SecureContextOptions {
  const problems: string[] = [];
  const ca = caBundle(config.caFile, variables.ca, problems);
  const pair =
    config.certFile !== undefined && config.keyFile !== undefined
      ? certificateAndKey(config.certFile, config.keyFile, { cert: variables.cert, key: variables.key }, nowMs, problems)
      : undefined;
  return contextOrProblem({ ca, ...(pair !== undefined ? { cert: pair.cert, key: pair.key } : {}) }, problems, variables.ca);
}

/**
 * Reads `files` again every `intervalMs` and calls `load` when any changed (a certificate
 * renewed by cert-manager, a Secret volume updated): `load` validates and applies, or throws
 * `TlsFileError`, and then the current material stays and the log says why — once per
 * content, so a half-written rotation is not logged on every tick. Returns a stop function.
 */
export function watchTlsFiles(files: readonly string[], intervalMs: number, load: () => unknown, logger: Logger, what: string): () => void {
  if (intervalMs <= 0) return () => {};
  const snapshot = () =>
    files
      .map((f) => {
        try {
          return readFileSync(f).toString("base64");
        } catch (error) {
          return `unreadable: ${(error as Error).message}`;
        }
      })
      .join("|");
  let seen = snapshot();
  const timer = setInterval(() => {
    const now = snapshot();
    if (now === seen) return;
    seen = now;
    try {
      const description = load();
      logger.info({ files, certificate: description }, `${what}: new certificate files loaded; new connections use them`);
    } catch (error) {
      const reason = error instanceof TlsFileError ? error.problems : [(error as Error).message];
      logger.error({ files, problems: reason }, `${what}: changed certificate files cannot be used; keeping the current ones`);
    }
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
