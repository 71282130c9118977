// `npm run bench -- NAME [args...]` runs bench/NAME.ts's run(args).
import { readdirSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";

interface BenchModule {
  run(args: string[]): Promise<void>;
}

const here = dirname(fileURLToPath(import.meta.url));
const available = readdirSync(here)
  .filter((file) => file.endsWith(".js") && file !== "run.js")
  .map((file) => file.slice(0, -".js".length));

const [name, ...args] = process.argv.slice(2);
if (name === undefined || !available.includes(name)) {
  process.stderr.write(`usage: npm run bench -- <${available.join("|")}> [args...]\n`);
  process.exit(2);
}
const module = (await import(`./${name}.js`)) as BenchModule;
await module.run(args);
