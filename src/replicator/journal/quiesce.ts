// Quiesce hooks for app-consistent points, run by the agent on the source: each hook's `pre`
// runs in the declared order, the cut is taken, then each `post` runs in reverse order (the
// last frozen is the first thawed). A failed or timed-out pre hook means no app-consistent
// point: the hooks already run are thawed and the cut is taken as an ordinary one.
import { spawn } from "node:child_process";
import type { PointConsistency } from "./point.js";

export type HookAction =
  | { kind: "command"; argv: readonly string[]; env?: Readonly<Record<string, string>>; cwd?: string }
  | { kind: "http"; url: string; method?: "GET" | "POST" | "PUT" };

export interface QuiesceHook {
  name: string;
  pre?: HookAction;
  post?: HookAction;
  timeoutMs: number;
}

export interface HookStep {
  hook: string;
  phase: "pre" | "post";
  ok: boolean;
  durationMs: number;
  error?: string;
}

export interface QuiescedCut<T> {
  /** True only when every pre hook succeeded before the cut. */
  quiesced: boolean;
  result: T;
  steps: HookStep[];
}

const maxTimeoutMs = 60 * 60 * 1000;
const outputTailBytes = 2048;

/** Returns the problems of a hook list (empty when it is usable). */
export function hookProblems(hooks: readonly QuiesceHook[]): string[] {
  const problems: string[] = [];
  const names = new Set<string>();
  for (const [index, hook] of hooks.entries()) {
    const where = `hook ${index} (${JSON.stringify(hook.name)})`;
    if (hook.name === "") problems.push(`hook ${index}: name must not be empty`);
    if (names.has(hook.name)) problems.push(`${where}: name is used twice`);
    names.add(hook.name);
    if (!Number.isInteger(hook.timeoutMs) || hook.timeoutMs <= 0 || hook.timeoutMs > maxTimeoutMs)
      problems.push(`${where}: timeoutMs must be an integer between 1 and ${maxTimeoutMs}`);
    if (hook.pre === undefined && hook.post === undefined) problems.push(`${where}: needs a pre or a post action`);
    for (const action of [hook.pre, hook.post])
      if (action !== undefined) problems.push(...actionProblems(action, where));
  }
  return problems;
}

function actionProblems(action: HookAction, where: string): string[] {
  if (action.kind === "command")
    return action.argv.length === 0 || action.argv[0] === "" ? [`${where}: command needs a program to run`] : [];
  let url: URL;
  try {
    url = new URL(action.url);
  } catch {
    return [`${where}: the http action's url is not a URL`]; // never echoed: it may hold credentials
  }
  return url.protocol === "http:" || url.protocol === "https:"
    ? []
    : [`${where}: only http and https URLs are allowed (got ${url.protocol})`];
}

/**
 * Runs the pre hooks, the cut and the post hooks; never throws for a hook's failure, reports it
 * (each step also to `onStep` as soon as it finished, so a long cut can report its pre hooks).
 */
export async function runQuiesced<T>(
  hooks: readonly QuiesceHook[],
  cut: (quiesced: boolean) => Promise<T>,
  onStep: (step: HookStep) => void = () => undefined,
): Promise<QuiescedCut<T>> {
  const problems = hookProblems(hooks);
  if (problems.length > 0) throw new Error(`invalid quiesce hooks: ${problems.join("; ")}`);
  const steps: HookStep[] = [];
  const record = (step: HookStep): void => {
    steps.push(step);
    onStep(step);
  };
  const frozen: QuiesceHook[] = [];
  let quiesced = true;
  for (const hook of hooks) {
    const step = hook.pre === undefined ? undefined : await runStep(hook, "pre", hook.pre);
    if (step !== undefined) record(step);
    if (step !== undefined && !step.ok) {
      quiesced = false;
      break;
    }
    frozen.push(hook);
  }
  if (!quiesced) await thaw(frozen, record);
  try {
    const result = await cut(quiesced);
    return { quiesced, result, steps };
  } finally {
    // Thawed even when the cut failed: a frozen application must never stay frozen.
    if (quiesced) await thaw(frozen, record);
  }
}

async function thaw(frozen: readonly QuiesceHook[], record: (step: HookStep) => void): Promise<void> {
  for (const hook of [...frozen].reverse()) if (hook.post !== undefined) record(await runStep(hook, "post", hook.post));
}

async function runStep(hook: QuiesceHook, phase: "pre" | "post", action: HookAction): Promise<HookStep> {
  const started = Date.now();
  try {
    if (action.kind === "command") await runCommand(action, hook.timeoutMs);
    else await callHttp(action, hook.timeoutMs);
    return { hook: hook.name, phase, ok: true, durationMs: Date.now() - started };
  } catch (error) {
    return { hook: hook.name, phase, ok: false, durationMs: Date.now() - started, error: (error as Error).message };
  }
}

function runCommand(action: Extract<HookAction, { kind: "command" }>, timeoutMs: number): Promise<void> {
  const [program = "", ...args] = action.argv;
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, {
      cwd: action.cwd,
      env: { ...process.env, ...action.env },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true, // its own process group, so a timeout kills everything it started
    });
    let output = "";
    const keep = (chunk: Buffer): void => {
      output = (output + chunk.toString("utf8")).slice(-outputTailBytes);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    const timer = setTimeout(() => {
      if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
      reject(new Error(`timed out after ${timeoutMs} ms and was killed`));
    }, timeoutMs);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(new Error(`could not start ${program}: ${error.message}`));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`exited with ${signal ?? `code ${code}`}${output === "" ? "" : `: ${output.trim()}`}`));
    });
  });
}

async function callHttp(action: Extract<HookAction, { kind: "http" }>, timeoutMs: number): Promise<void> {
  // fetch refuses URLs with credentials: they travel as a basic Authorization header instead.
  const url = new URL(action.url);
  const headers: Record<string, string> = {};
  if (url.username !== "" || url.password !== "") {
    const user = decodeURIComponent(url.username);
    const password = decodeURIComponent(url.password);
    headers.authorization = `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
    url.username = "";
    url.password = "";
  }
  let response: Response;
  try {
    response = await fetch(url, { method: action.method ?? "POST", headers, signal: AbortSignal.timeout(timeoutMs) });
  } catch (error) {
    const cause = error as Error;
    throw new Error(
      cause.name === "TimeoutError" ? `timed out after ${timeoutMs} ms` : `request failed: ${cause.message}`,
    );
  }
  const body = (await response.text()).slice(0, outputTailBytes);
  if (!response.ok) throw new Error(`answered HTTP ${response.status}${body === "" ? "" : `: ${body.trim()}`}`);
}

/**
 * The consistency a cut really has. App only when the hooks quiesced the application and the
 * agent saw no write in flight across the cut; crash when no write was in flight; otherwise the
 * point may hold half of a write and is only best-effort.
 */
export function cutConsistency(cut: {
  appRequested: boolean;
  quiesced: boolean;
  writesInFlight: boolean;
}): PointConsistency {
  if (cut.writesInFlight) return "best-effort";
  return cut.appRequested && cut.quiesced ? "app" : "crash";
}
