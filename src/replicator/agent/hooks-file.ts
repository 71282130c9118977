// The agent's quiesce hooks file (YAML or JSON): what freezes and thaws the application for an
// app-consistent point. Everything is checked before the agent starts; an unknown key is an
// error, not ignored, so a typo never silently drops a freeze.
import { readFile } from "node:fs/promises";
import { parse } from "yaml";
import { hookProblems, type HookAction, type QuiesceHook } from "../journal/quiesce.js";

const defaultTimeoutSeconds = 60;

type Problems = string[];

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function unknownKeys(
  value: Record<string, unknown>,
  known: readonly string[],
  where: string,
  problems: Problems,
): void {
  for (const key of Object.keys(value))
    if (!known.includes(key)) problems.push(`${where}: unknown key "${key}" (known: ${known.join(", ")})`);
}

function stringRecord(value: unknown, where: string, problems: Problems): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  if (!isRecord(value) || Object.values(value).some((item) => typeof item !== "string")) {
    problems.push(`${where}: must map names to strings`);
    return undefined;
  }
  return value as Record<string, string>;
}

function parseAction(value: unknown, where: string, problems: Problems): HookAction | undefined {
  if (value === undefined) return undefined;
  if (!isRecord(value)) {
    problems.push(`${where}: must be {command: [...]} or {http: URL}`);
    return undefined;
  }
  if ("command" in value === "http" in value) {
    problems.push(`${where}: give exactly one of command or http`);
    return undefined;
  }
  if ("command" in value) {
    unknownKeys(value, ["command", "env", "cwd"], where, problems);
    const argv = value.command;
    if (!Array.isArray(argv) || argv.some((item) => typeof item !== "string")) {
      problems.push(`${where}: command must be a list of strings (program and arguments)`);
      return undefined;
    }
    if (value.cwd !== undefined && typeof value.cwd !== "string") problems.push(`${where}: cwd must be a string`);
    const env = stringRecord(value.env, `${where}.env`, problems);
    return {
      kind: "command",
      argv: argv as string[],
      ...(env === undefined ? {} : { env }),
      ...(typeof value.cwd === "string" ? { cwd: value.cwd } : {}),
    };
  }
  unknownKeys(value, ["http", "method"], where, problems);
  if (typeof value.http !== "string") {
    problems.push(`${where}: http must be a URL string`);
    return undefined;
  }
  const method = value.method ?? "POST";
  if (method !== "GET" && method !== "POST" && method !== "PUT") {
    problems.push(`${where}: method must be GET, POST or PUT`);
    return undefined;
  }
  return { kind: "http", url: value.http, method };
}

function parseHook(value: unknown, index: number, problems: Problems): QuiesceHook | undefined {
  const where = `hooks[${index}]`;
  if (!isRecord(value)) {
    problems.push(`${where}: must be a mapping with name, pre and/or post, timeoutSeconds`);
    return undefined;
  }
  unknownKeys(value, ["name", "pre", "post", "timeoutSeconds"], where, problems);
  const timeoutSeconds = value.timeoutSeconds ?? defaultTimeoutSeconds;
  if (typeof value.name !== "string") problems.push(`${where}: name must be a string`);
  if (typeof timeoutSeconds !== "number") problems.push(`${where}: timeoutSeconds must be a number`);
  const pre = parseAction(value.pre, `${where}.pre`, problems);
  const post = parseAction(value.post, `${where}.post`, problems);
  if (typeof value.name !== "string" || typeof timeoutSeconds !== "number") return undefined;
  return {
    name: value.name,
    timeoutMs: Math.round(timeoutSeconds * 1000),
    ...(pre === undefined ? {} : { pre }),
    ...(post === undefined ? {} : { post }),
  };
}

/** Parses and validates hooks file text; throws one error listing every problem. */
export function parseHooks(text: string, source: string): QuiesceHook[] {
  let document: unknown;
  try {
    document = parse(text);
  } catch (error) {
    throw new Error(`${source}: not YAML or JSON: ${(error as Error).message}`);
  }
  const problems: Problems = [];
  if (!isRecord(document) || !Array.isArray(document.hooks) || document.hooks.length === 0)
    throw new Error(`${source}: expected a mapping with a non-empty "hooks" list`);
  unknownKeys(document, ["hooks"], source, problems);
  const hooks = document.hooks.map((hook, index) => parseHook(hook, index, problems));
  const parsed = hooks.filter((hook): hook is QuiesceHook => hook !== undefined);
  if (problems.length === 0) problems.push(...hookProblems(parsed));
  if (problems.length > 0) throw new Error(`${source}: ${problems.join("; ")}`);
  return parsed;
}

export async function readHooksFile(path: string): Promise<QuiesceHook[]> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new Error(`--hooks-file ${path} cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  return parseHooks(text, `--hooks-file ${path}`);
}
