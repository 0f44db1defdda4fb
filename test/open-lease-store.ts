// Child process of the contract suite's migration test: opens the lease store the way a gateway
// does (createLeaseStore: PostgreSQL connects and migrates in the background), waits until it
// is available, registers one instance, prints `opened <engine>` and exits.
import { createLeaseStore, type LeaseStoreConfig } from "../gateway/leases/create-lease-store.js";

const [configJson = "{}", address = "x:1"] = process.argv.slice(2);
const store = await createLeaseStore(JSON.parse(configJson) as LeaseStoreConfig);
const deadline = Date.now() + 20_000;
while (!store.available()) {
  if (Date.now() > deadline) throw new Error("lease store not available within 20 s");
  await new Promise((resolve) => setTimeout(resolve, 20));
}
await store.register([address]);
process.stdout.write(`opened ${store.engine}\n`);
await store.close();
