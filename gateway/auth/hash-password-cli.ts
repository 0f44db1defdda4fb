import { createInterface } from "node:readline/promises";
import { hashPassword } from "./passwords.js";

// Usage: npm run hash-password            (reads the password from stdin)
//        npm run hash-password -- <password>
const fromArgs = process.argv[2];
let password = fromArgs;
if (password === undefined) {
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: process.stdin.isTTY });
  password = await rl.question("password: ");
  rl.close();
}
if (password === "") {
  process.stderr.write("empty password\n");
  process.exit(2);
}
process.stdout.write(`${await hashPassword(password)}\n`);
