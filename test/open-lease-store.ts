// Child process of the contract suite's migration test: opens the lease store the way a gateway
// does (createLeaseStore), registers one instance, prints `opened <engine>` and exits.
import { createLeaseStore, type LeaseStoreConfig } from "../gateway/leases/create-lease-store.js";

const [configJson = "{}", address = "x:1"] = process.argv.slice(2);
const store = await createLeaseStore(JSON.parse(configJson) as LeaseStoreConfig);
await store.register([address]);
process.stdout.write(`opened ${store.engine}\n`);
await store.close();
