import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Supervisor } from "./supervisor.js";
import { controlActions, controlSignals, type UpState } from "./up-protocol.js";

const actions = new Set<string>([...controlActions, "signal"]);

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

/**
 * Builds the launcher's control API (JSON over HTTP/1.1; the caller listens on loopback):
 * `GET /processes`, `GET /state`, `POST /processes/<name>/{kill,stop,start,restart}` and
 * `POST /processes/<name>/signal?sig=...`, where `<name>` may be `instances` or `gateway`
 * (every gateway). `restart` takes the processes one after the other, each back before the next.
 * Replies 200 with the process list after the action, 404 for an unknown name or path,
 * 400 for a bad action or signal, 405 for a wrong method.
 */
export function createControlServer(supervisor: Supervisor, state: () => UpState): Server {
  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://localhost");
    const parts = url.pathname
      .split("/")
      .filter((p) => p !== "")
      .map(decodeURIComponent);
    if (parts.length === 1 && (parts[0] === "processes" || parts[0] === "state")) {
      if (req.method !== "GET") return reply(res, 405, { error: "use GET" });
      return reply(res, 200, parts[0] === "state" ? state() : supervisor.list());
    }
    if (parts.length !== 3 || parts[0] !== "processes") return reply(res, 404, { error: `no route ${url.pathname}` });
    if (req.method !== "POST") return reply(res, 405, { error: "use POST" });
    const [, name = "", action = ""] = parts;
    const names = supervisor.resolve(name);
    if (names.length === 0) return reply(res, 404, { error: `unknown process ${name}` });
    if (!actions.has(action)) return reply(res, 400, { error: `unknown action ${action}: use ${[...actions].join(", ")}` });
    if (action === "signal") {
      const sig = url.searchParams.get("sig") ?? "";
      if (!(controlSignals as readonly string[]).includes(sig)) {
        return reply(res, 400, { error: `sig must be one of ${controlSignals.join(", ")}` });
      }
      for (const n of names) supervisor.signal(n, sig as NodeJS.Signals);
    } else if (action === "start") {
      for (const n of names) supervisor.start(n);
    } else if (action === "restart") {
      // One after the other: with several gateways, the others serve meanwhile.
      for (const n of names) await supervisor.restart(n);
    } else {
      await Promise.all(names.map((n) => (action === "kill" ? supervisor.kill(n) : supervisor.stop(n))));
    }
    reply(res, 200, supervisor.list());
  }

  return createServer((req, res) => {
    // Requests carry no body worth reading; drain it so keep-alive connections stay usable.
    req.resume();
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) reply(res, 500, { error: String(error) });
      else res.destroy();
    });
  });
}
