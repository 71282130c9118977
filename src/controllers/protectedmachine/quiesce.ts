// Recovery points the operator cuts itself, as a coordinator of the agents' Barrier service:
//  - app-consistent points of a machine whose quiesce hooks are exec hooks: the hooks run in the
//    workload's containers through the API's pods/exec (agents hold no API credentials, so they
//    cannot), in Velero's order: pre hooks, the cut, post hooks (also after a failure);
//  - the points of a consistency group, one barrier across every member's streams (DESIGN.md §5).
// A member whose hooks are HTTP hooks is quiesced by its own agent during the hold.
import type { ExecHook, ProtectedMachine, QuiesceSpec, ReplicationPolicy } from "../../api/types.js";
import { Consistency, type PointInfo } from "../../gen/ksr/replication/v1/replication.js";
import { RemoteMember } from "../../replicator/group-coordinator.js";
import {
  BarrierCoordinator,
  type GroupCutResult,
  type GroupPoint,
} from "../../replicator/journal/consistency-group.js";
import type { PointConsistency } from "../../replicator/journal/point.js";
import { agentCommonName } from "../../replicator/tls.js";
import type { KubeClient, Logger } from "../../runtime/index.js";
import { policyDurationMs } from "../replicationpolicy/flags.js";
import type { ReplicatorClients } from "./replicator-clients.js";
import type { Problem } from "./workload.js";

/** How the machine's app-consistent points are taken, from its hooks. */
export type QuiesceMode =
  | { kind: "none" }
  /** The agent runs HTTP hooks itself (its hooks file). */
  | { kind: "agent" }
  | { kind: "exec"; pre: ExecHook; post?: ExecHook; timeoutMs: number; skipOnFailure: boolean };

export function quiesceMode(quiesce: QuiesceSpec | undefined): QuiesceMode | Problem {
  if (quiesce === undefined) return { kind: "none" };
  const { pre, post } = quiesce;
  if (pre.exec === undefined && post?.exec === undefined) return { kind: "agent" };
  if (pre.exec === undefined || (post !== undefined && post.exec === undefined))
    return {
      reason: "MixedQuiesceHooks",
      message:
        "spec.source.quiesce mixes an exec and an http hook: make pre and post both exec (run by the operator in the workload's container) or both http (run by the agent)",
    };
  return {
    kind: "exec",
    pre: pre.exec,
    ...(post?.exec === undefined ? {} : { post: post.exec }),
    timeoutMs: policyDurationMs(quiesce.timeout, "spec.source.quiesce.timeout"),
    skipOnFailure: quiesce.onFailure === "SkipPoint",
  };
}

export function isProblem(mode: QuiesceMode | Problem): mode is Problem {
  return "reason" in mode;
}

/** One stream of a member: its agent's Barrier address. */
export interface MemberStream {
  machineId: string;
  address: string;
}

/** A machine taking part in a cut: where its hooks run and its streams' barriers. */
export interface CutMember {
  machine: ProtectedMachine;
  mode: QuiesceMode;
  /** The workload's pods (the exec hooks run in each). */
  pods: readonly string[];
  streams: readonly MemberStream[];
}

export interface HookRun {
  machine: string;
  pod: string;
  phase: "pre" | "post";
  ok: boolean;
  /** Exit code, timeout or why it could not run; never the command's environment. */
  error?: string;
}

export type CutOutcome =
  | { kind: "point"; point: GroupPoint; hooks: HookRun[] }
  | { kind: "skipped"; hooks: HookRun[]; reason: string }
  | { kind: "failed"; hooks: HookRun[]; reason: string };

export interface CutDeps {
  client: KubeClient;
  replicators: ReplicatorClients;
  log: Logger;
}

async function runHook(
  deps: CutDeps,
  member: CutMember,
  pod: string,
  phase: "pre" | "post",
  hook: ExecHook,
  timeoutMs: number,
): Promise<HookRun> {
  const run = { machine: member.machine.metadata.name, pod, phase };
  const target = { namespace: member.machine.metadata.namespace ?? "", pod, container: hook.container };
  try {
    const result = await deps.client.exec(target, hook.command, { timeoutMs });
    if (result.exitCode === 0) return { ...run, ok: true };
    // The output's tail goes to the operator's log only (a hook may print what an Event must not carry).
    deps.log.warn({ pod, phase, exitCode: result.exitCode, stderr: result.stderr.slice(-512) }, "quiesce hook failed");
    return { ...run, ok: false, error: `exit code ${result.exitCode}` };
  } catch (error) {
    return { ...run, ok: false, error: (error as Error).message };
  }
}

/** Runs one phase of every exec member's hook in every pod, concurrently. */
function runPhase(deps: CutDeps, members: readonly CutMember[], phase: "pre" | "post"): Promise<HookRun[]> {
  return Promise.all(
    members.flatMap((member) => {
      const mode = member.mode;
      if (mode.kind !== "exec") return [];
      const hook = phase === "pre" ? mode.pre : mode.post;
      if (hook === undefined) return [];
      return member.pods.map((pod) => runHook(deps, member, pod, phase, hook, mode.timeoutMs));
    }),
  );
}

/**
 * One point across every stream of every member: pre hooks, hold, mark, release, post hooks.
 * `group` labels the markers ("" for a machine's own point); ids start with `idPrefix`.
 */
export async function cutPoint(
  deps: CutDeps,
  members: readonly CutMember[],
  requested: PointConsistency,
  labels: { group: string; idPrefix: string; phaseTimeoutMs: number },
): Promise<CutOutcome> {
  const app = requested === "app";
  const hooks = app ? await runPhase(deps, members, "pre") : [];
  const failed = hooks.filter((run) => !run.ok);
  const skip = failed.length > 0 && members.some((member) => member.mode.kind === "exec" && member.mode.skipOnFailure);
  let result: GroupCutResult | undefined;
  try {
    if (!skip) {
      const timing = { callTimeoutMs: labels.phaseTimeoutMs, holdTimeoutMs: 3 * labels.phaseTimeoutMs };
      const remote = await Promise.all(
        members.flatMap((member) =>
          member.streams.map(async (stream) => {
            const client = await deps.replicators.barrier(stream.address, agentCommonName(stream.machineId));
            // An exec member is quiesced by the hooks above; an http member by its agent during the hold.
            const byCaller = member.mode.kind === "exec" && failed.length === 0;
            return new RemoteMember(
              { machineId: stream.machineId, address: stream.address },
              client,
              app && (byCaller || member.mode.kind === "agent") ? "app" : "crash",
              timing,
              {
                warn: (message) => {
                  deps.log.warn(message);
                },
              },
              byCaller,
            );
          }),
        ),
      );
      const coordinator = new BarrierCoordinator(
        { append: () => Promise.resolve() },
        { phaseTimeoutMs: labels.phaseTimeoutMs },
      );
      result = await coordinator.cut(labels.group, remote, failed.length > 0 ? "crash" : requested, labels.idPrefix);
    }
  } finally {
    // Post hooks run also when pre or the cut failed (the API's promise): resume writes.
    if (app) hooks.push(...(await runPhase(deps, members, "post")));
  }
  if (result === undefined)
    return {
      kind: "skipped",
      hooks,
      reason: `quiesce hooks failed (${describeFailures(failed)}); onFailure is SkipPoint`,
    };
  if (!result.ok) return { kind: "failed", hooks, reason: result.reason };
  return { kind: "point", point: result.point, hooks };
}

export function describeFailures(runs: readonly HookRun[]): string {
  return runs
    .filter((run) => !run.ok)
    .map((run) => `${run.machine}/${run.pod} ${run.phase}: ${run.error ?? "failed"}`)
    .join("; ");
}

/** The newest point of a machine matching `which`, over all its volumes' point lists. */
export function newestPointTime(
  volumes: readonly { points?: readonly PointInfo[] }[],
  which: (point: PointInfo) => boolean,
): number | undefined {
  let newest: number | undefined;
  for (const volume of volumes)
    for (const point of volume.points ?? [])
      if (which(point) && (newest === undefined || point.timeUnixMs > newest)) newest = point.timeUnixMs;
  return newest;
}

export const isAppPoint = (point: PointInfo): boolean => point.consistency === Consistency.CONSISTENCY_APP;

/** The cadence of the points the operator cuts for these members, and the consistency they ask for. */
export function cutCadence(
  policy: ReplicationPolicy,
  members: readonly CutMember[],
): { requested: PointConsistency; everyMs: number } | undefined {
  const appEvery = policy.spec.appConsistentFrequency;
  const grouped = members.some((member) => member.machine.spec.consistencyGroup !== undefined);
  if (!grouped) {
    // A machine of its own: its agent cuts crash points (and app points with HTTP hooks) itself.
    const exec = members.length === 1 && members[0]?.mode.kind === "exec";
    return exec && appEvery !== undefined
      ? { requested: "app", everyMs: policyDurationMs(appEvery, "appConsistentFrequency") }
      : undefined;
  }
  if (appEvery !== undefined && members.every((member) => member.mode.kind !== "none"))
    return { requested: "app", everyMs: policyDurationMs(appEvery, "appConsistentFrequency") };
  return {
    requested: "crash",
    everyMs: policyDurationMs(policy.spec.crashConsistentFrequency, "crashConsistentFrequency"),
  };
}
