// webhook: one HTTP call with a JSON description of the run and the step; any
// 2xx is success. Headers come from a Secret and are never logged, recorded or
// put in an event. The URL is checked again here (admission checks it too).
import { secrets } from "../../../runtime/index.js";
import { apiDurationMs, formatDuration } from "../../../util/duration.js";
import type { StepContext, StepExecutor } from "./types.js";

const defaultTimeoutMs = 30_000;
const headerName = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Why the URL must not be called, or undefined. */
export function webhookUrlProblem(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `${text} is not an absolute URL`;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    return `${url.protocol} URLs are not called; use http or https`;
  if (url.hostname === "") return "the URL has no host";
  if (url.username !== "" || url.password !== "") return "the URL carries credentials; put them in headersSecretRef";
  return undefined;
}

export const webhookStep: StepExecutor = {
  async execute({ run, work, client, signal }: StepContext) {
    const hook = work.action?.webhook;
    if (hook === undefined) return { state: "Failed", message: "the step has no webhook action" };
    const problem = webhookUrlProblem(hook.url);
    if (problem !== undefined) return { state: "Failed", message: problem };
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (hook.headersSecretRef !== undefined) {
      const secret = await client.get(secrets, hook.headersSecretRef.name, run.metadata.namespace);
      if (secret === undefined)
        return { state: "Failed", message: `Secret ${hook.headersSecretRef.name} (headersSecretRef) does not exist` };
      for (const [name, value] of Object.entries(secret.data ?? {})) {
        const decoded = Buffer.from(value, "base64").toString("utf8");
        if (!headerName.test(name) || /[\r\n]/.test(decoded))
          return {
            state: "Failed",
            message: `Secret ${hook.headersSecretRef.name} has an entry that is no valid header (${name})`,
          };
        headers[name] = decoded;
      }
    }
    const body = {
      run: { name: run.metadata.name, namespace: run.metadata.namespace, uid: run.metadata.uid, type: run.spec.type },
      plan: run.spec.planRef?.name,
      step: {
        name: work.step.name,
        group: work.step.group,
        action: work.action?.name,
        attempt: work.step.attempts ?? 1,
      },
      phase: run.status?.phase,
      recoveryPoints: run.status?.recoveryPoints ?? [],
      // The same key on a repeat after a restart, so the receiver can drop the duplicate.
      idempotencyKey: `${run.metadata.uid ?? run.metadata.name}/${work.step.name}/${work.step.attempts ?? 1}`,
    };
    const timeoutMs = apiDurationMs(work.action?.timeout ?? "") ?? defaultTimeoutMs;
    try {
      const response = await fetch(hook.url, {
        method: hook.method,
        headers,
        body: JSON.stringify(body),
        signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
        redirect: "manual",
      });
      await response.body?.cancel();
      return response.status >= 200 && response.status < 300
        ? { state: "Succeeded", message: `${hook.method} ${new URL(hook.url).host}: ${response.status}` }
        : { state: "Failed", message: `${hook.method} ${new URL(hook.url).host} answered ${response.status}` };
    } catch (error) {
      // The cause's code (ECONNREFUSED, ENOTFOUND) says what to fix; the URL holds no credentials (checked above).
      const failure = error as Error & { cause?: { code?: string } };
      const why =
        failure.name === "TimeoutError"
          ? `no answer within ${formatDuration(timeoutMs)}`
          : (failure.cause?.code ?? failure.name);
      return { state: "Failed", message: `${hook.method} ${new URL(hook.url).host} failed: ${why}` };
    }
  },
};
