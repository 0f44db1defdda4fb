#!/usr/bin/env node
// `npx integrationtests`: registers tsx in this process, then runs the TypeScript CLI.
// Exit codes and output are the CLI's own (0 pass, 1 fail, 2 usage error).
import { register } from "tsx/esm/api";

register();
await import(new URL("./cli.ts", import.meta.url).href);
