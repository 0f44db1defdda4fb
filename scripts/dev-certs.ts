import { execFileSync } from "node:child_process";
import { generateKeyPairSync, randomBytes, X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TlsServerConfig } from "../common/tls.js";

/** A certificate and its private key, as PEM files. */
export interface CertFiles {
  readonly cert: string;
  readonly key: string;
}

/** What a leaf certificate is for: TLS servers, TLS clients (mTLS), or both. */
export type CertUsage = "server" | "client" | "both";

/** Options of `issueCertificate`. */
export interface LeafOptions {
  readonly commonName: string;
  /** `subjectAltName` DNS names. */
  readonly dnsNames?: readonly string[];
  /** `subjectAltName` IP addresses. */
  readonly ipAddresses?: readonly string[];
  /** Default `server`. */
  readonly usage?: CertUsage;
  /** Validity in days from now; negative makes a certificate that has already expired (tests). Default 365. */
  readonly days?: number;
}

function openssl(args: readonly string[]): void {
  try {
    execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
  } catch (error) {
    const stderr = (error as { stderr?: Buffer }).stderr?.toString().trim();
    const missing = (error as NodeJS.ErrnoException).code === "ENOENT";
    throw new Error(missing ? "openssl not found: apt-get install -y openssl" : `openssl ${args[0]} failed: ${stderr ?? error}`);
  }
}

/** `openssl req` arguments that make a new P-256 key, unencrypted, into `keyFile`. */
function newP256Key(keyFile: string): string[] {
  return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", keyFile];
}

/** A new self-signed CA (ECDSA P-256) as `<dir>/<name>.crt` and `<name>.key`. */
export function createCa(dir: string, name = "ca", commonName = "MyService development CA", days = 825): CertFiles {
  mkdirSync(dir, { recursive: true });
  const files = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  openssl([
    "req",
    "-x509",
    "-new",
    ...newP256Key(files.key),
    "-out",
    files.cert,
    "-days",
    String(days),
    "-subj",
    `/CN=${commonName}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  return files;
}

/** A leaf certificate (ECDSA P-256) signed by `ca`, as `<dir>/<name>.crt` and `<name>.key`. */
export function issueCertificate(ca: CertFiles, dir: string, name: string, options: LeafOptions): CertFiles {
  mkdirSync(dir, { recursive: true });
  const files = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  const usage = options.usage ?? "server";
  const eku = usage === "both" ? "serverAuth,clientAuth" : usage === "server" ? "serverAuth" : "clientAuth";
  const alt = [...(options.dnsNames ?? []).map((n) => `DNS:${n}`), ...(options.ipAddresses ?? []).map((ip) => `IP:${ip}`)];
  writeFileSync(
    ext,
    [
      "basicConstraints=CA:FALSE",
      "keyUsage=critical,digitalSignature",
      `extendedKeyUsage=${eku}`,
      ...(alt.length > 0 ? [`subjectAltName=${alt.join(",")}`] : []),
      "",
    ].join("\n"),
  );
  try {
    openssl(["req", "-new", ...newP256Key(files.key), "-out", csr, "-subj", `/CN=${options.commonName}`]);
    openssl([
      "x509",
      "-req",
      "-in",
      csr,
      "-CA",
      ca.cert,
      "-CAkey",
      ca.key,
      "-set_serial",
      `0x${randomBytes(12).toString("hex")}`,
      "-days",
      String(options.days ?? 365),
      "-extfile",
      ext,
      "-out",
      files.cert,
    ]);
  } finally {
    rmSync(csr, { force: true });
    rmSync(ext, { force: true });
  }
  return files;
}

/** A server's TLS settings serving `cert` (what `readTlsServerEnv` would read), for tests and the bench. */
export function serverTlsConfig(cert: CertFiles, overrides: Partial<TlsServerConfig> = {}): TlsServerConfig {
  return {
    certFile: cert.cert,
    keyFile: cert.key,
    clientCaFile: undefined,
    clientAuth: "none",
    minVersion: "TLSv1.2",
    reloadIntervalMs: 0,
    ...overrides,
  };
}

/** A new Ed25519 token signing key: `<dir>/<name>.pem` (private) and `<name>.pub.pem` (public). */
export function createTokenKey(
  dir: string,
  name = "token-key",
  type: "ed25519" | "p256" = "ed25519",
): { privateKey: string; publicKey: string } {
  mkdirSync(dir, { recursive: true });
  const pair = type === "ed25519" ? generateKeyPairSync("ed25519") : generateKeyPairSync("ec", { namedCurve: "P-256" });
  const files = { privateKey: join(dir, `${name}.pem`), publicKey: join(dir, `${name}.pub.pem`) };
  writeFileSync(files.privateKey, pair.privateKey.export({ format: "pem", type: "pkcs8" }) as string, { mode: 0o600 });
  writeFileSync(files.publicKey, pair.publicKey.export({ format: "pem", type: "spki" }) as string);
  return files;
}

/** Every file `npm run up -- --tls` runs with, in `<data-dir>/tls/`. */
export interface DevTlsFiles {
  /** The local CA: clients trust `ca.cert` (`grpcurl -cacert`, `integrationtests --ca`). */
  readonly ca: CertFiles;
  /** The gateway's front door (localhost, 127.0.0.1, ::1). */
  readonly gateway: CertFiles;
  /** Every instance's server certificate (localhost, 127.0.0.1). */
  readonly instance: CertFiles;
  /** The gateway's client certificate towards instances (mTLS). */
  readonly gatewayClient: CertFiles;
  /** The Ed25519 key tokens are signed with, and its public half (what instances get). */
  readonly tokenKey: { readonly privateKey: string; readonly publicKey: string };
  /** True when this call made new files (else the ones of an earlier run are kept). */
  readonly created: boolean;
}

function usable(cert: string, ca: string | undefined, minValidMs: number): boolean {
  if (!existsSync(cert)) return false;
  try {
    const x = new X509Certificate(readFileSync(cert));
    if (Date.parse(x.validTo) - Date.now() < minValidMs) return false;
    return ca === undefined || x.checkIssued(new X509Certificate(readFileSync(ca)));
  } catch {
    return false;
  }
}

/**
 * The development PKI of `npm run up -- --tls`: a local CA, server certificates for the gateway
 * and the instances, the gateway's client certificate, and an Ed25519 token key, in
 * `<dataDir>/tls/`. Files of an earlier run are kept while valid for another day, so a CA a
 * user already trusts stays the same; whatever is missing or expiring is made anew.
 */
export function ensureDevTls(dataDir: string): DevTlsFiles {
  const dir = join(dataDir, "tls");
  const day = 24 * 3600 * 1000;
  const ca = { cert: join(dir, "ca.crt"), key: join(dir, "ca.key") };
  let created = false;
  if (!usable(ca.cert, undefined, day) || !existsSync(ca.key)) {
    createCa(dir, "ca");
    created = true;
  }
  const leaf = (name: string, options: LeafOptions): CertFiles => {
    const files = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
    if (!created && usable(files.cert, ca.cert, day) && existsSync(files.key)) return files;
    created = true;
    return issueCertificate(ca, dir, name, options);
  };
  const gateway = leaf("gateway", { commonName: "localhost", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1", "::1"] });
  const instance = leaf("instance", { commonName: "myservice", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
  const gatewayClient = leaf("gateway-client", { commonName: "gateway", usage: "client" });
  let tokenKey = { privateKey: join(dir, "token-key.pem"), publicKey: join(dir, "token-key.pub.pem") };
  if (!existsSync(tokenKey.privateKey) || !existsSync(tokenKey.publicKey)) {
    tokenKey = createTokenKey(dir, "token-key");
    created = true;
  }
  return { ca, gateway, instance, gatewayClient, tokenKey, created };
}
