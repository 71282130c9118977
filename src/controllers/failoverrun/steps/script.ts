// script: a Job in the namespace the group's machines are recovered to (the
// drill namespace in a Test run). Created once under a name derived from the run
// and the step, so executing again only reads the Job's state.
import { createHash } from "node:crypto";
import type { FailoverRun, RecoveryPlan, ProtectedMachine } from "../../../api/types.js";
import { isAlreadyExists, jobs, type Job, type KubeClient } from "../../../runtime/index.js";
import { directionOf } from "../../protectedmachine/direction.js";
import type { StepOutcome } from "../machine.js";
import { drillNamespaceOf } from "../machine.js";
import { createdByRun, runLabels, type StepContext, type StepExecutor } from "./types.js";

/**
 * Where a group's actions run: the namespace its machines are recovered to, the target of the
 * direction they replicate in (after a reprotect, the namespace they failed over from), or a Test
 * run's drill namespace.
 */
export function actionNamespace(
  run: FailoverRun | undefined,
  plan: RecoveryPlan,
  group: string,
  machines: ReadonlyMap<string, ProtectedMachine>,
): string {
  if (run?.spec.type === "Test") return drillNamespaceOf(run);
  const named = [
    ...(plan.spec.groups.find((candidate) => candidate.name === group)?.machines ?? []),
    ...plan.spec.groups.flatMap((candidate) => candidate.machines ?? []),
  ];
  for (const name of named) {
    const machine = machines.get(name);
    if (machine !== undefined) return directionOf(machine).targetNamespace;
  }
  return plan.metadata.namespace ?? "default";
}

const shortHash = (text: string) => createHash("sha256").update(text).digest("hex").slice(0, 8);

/** The Job of a script action: the template's metadata and spec, named after the run and step. */
export function scriptJob(
  plan: RecoveryPlan,
  key: string,
  template: { metadata?: Record<string, unknown>; spec: Record<string, unknown> },
  namespace: string,
  run?: FailoverRun,
): Job {
  const owner = run?.metadata.name ?? plan.metadata.name;
  const name = `${owner.slice(0, 40).replace(/[-.]+$/, "")}-${key
    .replace("/", "-")
    .slice(0, 12)
    .replace(/[-.]+$/, "")}-${shortHash(`${owner}/${key}`)}`;
  const metadata = template.metadata as
    { labels?: Record<string, string>; annotations?: Record<string, string> } | undefined;
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: {
      name: name.toLowerCase(),
      namespace,
      labels: { ...metadata?.labels, ...(run === undefined ? {} : runLabels(run)) },
      annotations: { ...metadata?.annotations, "dr.ksr.io/step": key },
    },
    spec: template.spec as unknown as Job["spec"],
  };
}

export const scriptStep: StepExecutor = {
  async execute({ run, work, plan, machines, client }: StepContext) {
    const template = work.action?.script?.jobTemplate;
    if (template === undefined || plan === undefined)
      return { state: "Failed", message: "the step has no script action" };
    const key = `${work.step.group ?? ""}/${work.action?.name ?? ""}`;
    const namespace = actionNamespace(run, plan, work.step.group ?? "", machines);
    const desired = scriptJob(plan, key, template, namespace, run);
    return ensureJob(client, run, desired);
  },
};

/** Creates the Job once, then reports its state: the step ends with it. */
export async function ensureJob(client: KubeClient, run: FailoverRun, desired: Job): Promise<StepOutcome> {
  const namespace = desired.metadata.namespace ?? "";
  const job = await client.get(jobs, desired.metadata.name, namespace);
  if (job === undefined) {
    await client.create(jobs, desired).catch((error: unknown) => {
      if (!isAlreadyExists(error)) throw error;
    });
    return {
      state: "InProgress",
      message: `Job ${namespace}/${desired.metadata.name} created`,
      recheckAfterMs: 2000,
    };
  }
  if (!createdByRun(job, run))
    return {
      state: "Failed",
      message: `Job ${namespace}/${desired.metadata.name} exists and was not created by this run`,
    };
  const conditions = job.status?.conditions ?? [];
  const failed = conditions.find((condition) => condition.type === "Failed" && condition.status === "True");
  if (failed !== undefined)
    return {
      state: "Failed",
      message: `Job ${namespace}/${desired.metadata.name} failed: ${failed.message ?? failed.reason ?? ""}`,
    };
  if (conditions.some((condition) => condition.type === "Complete" && condition.status === "True"))
    return { state: "Succeeded", message: `Job ${namespace}/${desired.metadata.name} completed` };
  return {
    state: "InProgress",
    message: `Job ${namespace}/${desired.metadata.name}: ${job.status?.active ?? 0} running, ${job.status?.failed ?? 0} failed`,
    recheckAfterMs: 3000,
  };
}
