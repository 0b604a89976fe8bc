// The line protocol both browser drivers speak with the Rust tests: one JSON
// command per line on stdin, one JSON reply per line on stdout
// ({id, ok, value} or {id, ok: false, error}). `run` carries out a command;
// `close` ends the browser when stdin ends or after `quit`.
import { createInterface } from "node:readline";

export function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

export async function serveCommands(run, close) {
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let c;
    try {
      c = JSON.parse(line);
    } catch (e) {
      reply({ id: null, ok: false, error: `bad command: ${e.message}` });
      continue;
    }
    try {
      const value = await run(c);
      reply({ id: c.id, ok: true, value: value === undefined ? null : value });
    } catch (e) {
      reply({ id: c.id, ok: false, error: String(e && e.message ? e.message : e) });
    }
    if (c.cmd === "quit") break;
  }
  await close().catch(() => {});
  process.exit(0);
}
