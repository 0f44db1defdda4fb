import { lookup } from "node:dns/promises";

/** Finds instance addresses (`host:port`). */
export interface Discovery {
  /** What the addresses come from, for logs. */
  readonly description: string;
  /** Static lists never change: no need to resolve again. */
  readonly dynamic: boolean;
  resolve(): Promise<string[]>;
}

/** A fixed list (`MYSERVICE_ADDRESSES`). */
export function staticDiscovery(addresses: readonly string[]): Discovery {
  const list = [...new Set(addresses)];
  return { description: `static list ${list.join(",")}`, dynamic: false, resolve: async () => list };
}

/**
 * Every address a DNS name resolves to (`MYSERVICE_DNS=myservice:5000`): a compose service
 * with replicas, or a Kubernetes headless service.
 */
export function dnsDiscovery(nameAndPort: string): Discovery {
  const i = nameAndPort.lastIndexOf(":");
  const host = nameAndPort.slice(0, i);
  const port = nameAndPort.slice(i + 1);
  return {
    description: `DNS ${nameAndPort}`,
    dynamic: true,
    async resolve() {
      const records = await lookup(host, { all: true });
      const addresses = records.map((r) => (r.family === 6 ? `[${r.address}]:${port}` : `${r.address}:${port}`));
      return [...new Set(addresses)].sort();
    },
  };
}

/** Both sources together. */
export function combinedDiscovery(parts: readonly Discovery[]): Discovery {
  return {
    description: parts.map((p) => p.description).join(" + "),
    dynamic: parts.some((p) => p.dynamic),
    async resolve() {
      const lists = await Promise.all(parts.map((p) => p.resolve()));
      return [...new Set(lists.flat())];
    },
  };
}
