// `kubectl dr`: the kubectl plugin for day-two operations. Each command checks
// its arguments and what it refers to first, then creates or patches exactly
// the objects it names (a FailoverRun, a machine's spec) and nothing more; the
// operator does the work. --wait follows the run live.
import { Command, Option } from "commander";
import { stringify } from "yaml";
import {
  failoverRuns,
  protectedMachines,
  recoveryPlans,
  type FailoverRun,
  type FailoverRunPhase,
  type FailoverRunSpec,
  type FailoverRunType,
  type ProtectedMachine,
  type RecoveryPointSelector,
  type RecoveryPointReference,
} from "../api/types.js";
import { isAlreadyExists, isConflict, type KubeClient, type KubeObject, type ResourceType } from "../runtime/index.js";
import { apiDurationMs } from "../util/duration.js";
import { followRun } from "./dr/follow.js";
import { connect, whoAmI, withKubeFlags, type Connection, type KubeFlags, type OutputFormat } from "./dr/kube.js";
import { describePoint, machineTable, planTable, runTable, table } from "./dr/tables.js";
import { runProgram } from "./run.js";
import { version } from "./version.js";

export { resyncRequestAnnotation } from "../controllers/protectedmachine/names.js";
import { resyncRequestAnnotation } from "../controllers/protectedmachine/names.js";

class UsageError extends Error {}

type Flags = KubeFlags & Record<string, unknown>;

const flagsOf = (command: Command): Flags => command.optsWithGlobals<Flags>();

function print(value: unknown, output: OutputFormat | undefined): void {
  process.stdout.write(output === "yaml" ? stringify(value) : `${JSON.stringify(value, null, 2)}\n`);
}

const rfc3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

function parseTime(value: string, flag: string): string {
  if (!rfc3339.test(value) || Number.isNaN(Date.parse(value)))
    throw new UsageError(`${flag} ${JSON.stringify(value)} is not an RFC 3339 time such as 2026-12-01T09:30:00Z`);
  if (Date.parse(value) > Date.now() + 60_000)
    throw new UsageError(`${flag} ${value} is in the future; give the instant to recover to`);
  return value;
}

interface PointFlags {
  point?: string;
  time?: string;
  latestApp?: boolean;
  latest?: boolean;
}

/** The recovery point flags as a selector; undefined means the API's default (LatestProcessed). */
function pointSelector(flags: PointFlags, singleMachine: boolean): RecoveryPointSelector | undefined {
  const given = [flags.point, flags.time, flags.latestApp, flags.latest].filter(
    (flag) => flag !== undefined && flag !== false,
  );
  if (given.length > 1) throw new UsageError("give at most one of --point, --time, --latest-app, --latest");
  if (flags.point !== undefined) {
    if (!singleMachine)
      throw new UsageError("--point names one machine's point; for a plan use --time (points of a plan share times)");
    if (flags.point.trim() === "" || flags.point.length > 128)
      throw new UsageError("--point must be a recovery point id (see kubectl dr points MACHINE)");
    return { select: "ID", id: flags.point };
  }
  if (flags.time !== undefined) return { select: "Time", time: parseTime(flags.time, "--time") };
  if (flags.latestApp === true) return { select: "LatestAppConsistent" };
  if (flags.latest === true) return { select: "Latest" };
  return undefined;
}

async function mustGet<T extends KubeObject>(
  connection: Connection,
  type: ResourceType<T>,
  name: string,
  what: string,
): Promise<T> {
  const found = await connection.client.get(type, name, connection.namespace);
  if (found === undefined)
    throw new UsageError(`${what} ${name} not found in namespace ${connection.namespace} (use -n to pick another)`);
  return found;
}

const runWord: Record<FailoverRunType, string> = {
  Test: "drill",
  Planned: "planned",
  Unplanned: "unplanned",
  Reprotect: "reprotect",
};

function stamp(now: Date): string {
  return now.toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
}

/** Creates the run under a readable name (PLAN-drill-20261201-101500); a taken name gets a suffix. */
async function createRun(client: KubeClient, namespace: string, target: string, spec: FailoverRunSpec, name?: string) {
  const base = name ?? `${target}-${runWord[spec.type]}-${stamp(new Date())}`.slice(0, 240);
  for (let attempt = 1; ; attempt++) {
    const candidate = attempt === 1 ? base : `${base}-${attempt}`;
    try {
      return await client.create(failoverRuns, {
        apiVersion: "dr.ksr.io/v1alpha1",
        kind: "FailoverRun",
        metadata: { name: candidate, namespace },
        spec,
      });
    } catch (error) {
      if (!isAlreadyExists(error) || name !== undefined || attempt >= 20) throw error;
    }
  }
}

interface RunFlags extends Flags, PointFlags {
  machine?: string;
  name?: string;
  wait?: boolean;
  timeout?: string;
}

function waitTimeout(flags: { timeout?: string }): number | undefined {
  if (flags.timeout === undefined) return undefined;
  const ms = apiDurationMs(flags.timeout);
  if (ms === undefined || ms <= 0)
    throw new UsageError(`--timeout ${flags.timeout} is not a duration such as 90s or 30m`);
  return ms;
}

/** PLAN or --machine M, not both, not neither; the object must exist. */
async function runTarget(
  connection: Connection,
  plan: string | undefined,
  flags: RunFlags,
): Promise<{ target: string; ref: Pick<FailoverRunSpec, "planRef" | "machineRef"> }> {
  if ((plan === undefined) === (flags.machine === undefined))
    throw new UsageError("name a RecoveryPlan (PLAN) or a single machine (--machine M), not both");
  if (plan !== undefined) {
    await mustGet(connection, recoveryPlans, plan, "recoveryplan");
    return { target: plan, ref: { planRef: { name: plan } } };
  }
  const machine = flags.machine ?? "";
  await mustGet(connection, protectedMachines, machine, "protectedmachine");
  return { target: machine, ref: { machineRef: { name: machine } } };
}

async function startRun(
  command: Command,
  plan: string | undefined,
  type: FailoverRunType,
  extra: (flags: RunFlags) => Partial<FailoverRunSpec>,
): Promise<void> {
  const flags = flagsOf(command) as RunFlags;
  const timeoutMs = waitTimeout(flags);
  const selector = type === "Planned" ? undefined : pointSelector(flags, flags.machine !== undefined);
  const spec = extra(flags);
  const connection = connect(flags);
  const { target, ref } = await runTarget(connection, plan, flags);
  const run = await createRun(
    connection.client,
    connection.namespace,
    target,
    {
      type,
      ...ref,
      ...(selector === undefined ? {} : { recoveryPoint: selector }),
      ...spec,
      commit: false,
      cleanup: false,
    },
    flags.name,
  );
  if (flags.output === "json" || flags.output === "yaml") print(run, flags.output);
  else process.stdout.write(`failoverrun.dr.ksr.io/${run.metadata.name} created\n`);
  if (flags.wait === true) await follow(connection, run.metadata.name, ["Succeeded"], timeoutMs);
}

async function follow(
  connection: Connection,
  name: string,
  until: readonly FailoverRunPhase[],
  timeoutMs: number | undefined,
  doneWhen?: (run: FailoverRun) => boolean,
) {
  await followRun({
    client: connection.client,
    namespace: connection.namespace,
    name,
    until,
    out: process.stdout,
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
    ...(doneWhen === undefined ? {} : { doneWhen }),
  });
}

/** Patches a run's spec with a precondition on what was read, so a concurrent change is never lost. */
async function patchRun(
  connection: Connection,
  name: string,
  change: (run: FailoverRun) => Partial<FailoverRunSpec> | undefined,
): Promise<FailoverRun> {
  for (let attempt = 1; ; attempt++) {
    const run = await mustGet(connection, failoverRuns, name, "failoverrun");
    const spec = change(run);
    if (spec === undefined) return run;
    try {
      return await connection.client.patch(
        failoverRuns,
        { name, namespace: connection.namespace },
        { metadata: { resourceVersion: run.metadata.resourceVersion }, spec },
        "merge",
      );
    } catch (error) {
      if (!isConflict(error) || attempt >= 5) throw error;
    }
  }
}

function requireType(run: FailoverRun, types: readonly FailoverRunType[], why: string): void {
  if (!types.includes(run.spec.type))
    throw new UsageError(`failoverrun ${run.metadata.name} is a ${run.spec.type} run; ${why}`);
}

async function approve(command: Command, name: string, step: string): Promise<void> {
  const flags = flagsOf(command) as Flags & { comment?: string; by?: string; wait?: boolean; timeout?: string };
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?\/[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(step))
    throw new UsageError(`STEP ${JSON.stringify(step)} must be GROUP/ACTION, e.g. database/confirm`);
  const timeoutMs = waitTimeout(flags);
  const connection = connect(flags);
  const run = await mustGet(connection, failoverRuns, name, "failoverrun");
  if (run.spec.planRef !== undefined) {
    const plan = await mustGet(connection, recoveryPlans, run.spec.planRef.name, "recoveryplan");
    const [groupName, actionName] = step.split("/");
    const group = plan.spec.groups.find((candidate) => candidate.name === groupName);
    const action = [...(group?.preActions ?? []), ...(group?.postActions ?? [])].find((a) => a.name === actionName);
    if (action?.manual === undefined) {
      const manual = plan.spec.groups.flatMap((g) =>
        [...(g.preActions ?? []), ...(g.postActions ?? [])]
          .filter((a) => a.manual !== undefined)
          .map((a) => `${g.name}/${a.name}`),
      );
      throw new UsageError(
        `${step} is not a manual action of recoveryplan ${plan.metadata.name}; its manual actions: ${manual.join(", ") || "none"}`,
      );
    }
  } else throw new UsageError(`failoverrun ${name} runs a single machine: it has no manual actions to approve`);
  const approvedBy = flags.by ?? (await whoAmI(connection));
  let already: string | undefined;
  await patchRun(connection, name, (current) => {
    const existing = current.spec.approvals?.find((approval) => approval.step === step);
    if (existing !== undefined) {
      already = existing.approvedBy;
      return undefined;
    }
    const approval = {
      step,
      approvedBy,
      time: new Date().toISOString().replace(/\.\d{3}Z$/, "Z"),
      ...(flags.comment === undefined ? {} : { comment: flags.comment }),
    };
    return { approvals: [...(current.spec.approvals ?? []), approval] };
  });
  process.stdout.write(
    already === undefined
      ? `failoverrun.dr.ksr.io/${name} approved ${step} (by ${approvedBy})\n`
      : `failoverrun.dr.ksr.io/${name}: ${step} was already approved by ${already}; nothing changed\n`,
  );
  if (flags.wait === true) await follow(connection, name, ["Succeeded", "Committed", "CleanedUp"], timeoutMs);
}

async function setFlag(command: Command, name: string, field: "commit" | "cleanup"): Promise<void> {
  const flags = flagsOf(command) as Flags & { wait?: boolean; timeout?: string };
  const timeoutMs = waitTimeout(flags);
  const connection = connect(flags);
  const result = { changed: false };
  await patchRun(connection, name, (run) => {
    if (field === "commit")
      requireType(run, ["Planned", "Unplanned"], "only a failover is committed (end a drill with kubectl dr cleanup)");
    else requireType(run, ["Test"], "only a drill is cleaned up (a failover is made final with kubectl dr commit)");
    if (run.spec[field]) return undefined;
    result.changed = true;
    return { [field]: true };
  });
  process.stdout.write(
    `failoverrun.dr.ksr.io/${name} ${result.changed ? (field === "commit" ? "commit requested" : "cleanup requested") : "unchanged (already requested)"}\n`,
  );
  if (flags.wait === true) await follow(connection, name, [field === "commit" ? "Committed" : "CleanedUp"], timeoutMs);
}

async function changePoint(command: Command, name: string): Promise<void> {
  const flags = flagsOf(command) as Flags & PointFlags & { wait?: boolean; timeout?: string };
  if (flags.point === undefined && flags.time === undefined && flags.latestApp !== true)
    throw new UsageError("give the point to move to: --point ID, --time T or --latest-app");
  const timeoutMs = waitTimeout(flags);
  const connection = connect(flags);
  let count = 0;
  await patchRun(connection, name, (run) => {
    requireType(run, ["Planned", "Unplanned"], "only a failover's recovery point can be changed");
    if (run.spec.commit)
      throw new UsageError(`failoverrun ${name} is committed: its recovery point can no longer change`);
    const selector = pointSelector(flags, run.spec.machineRef !== undefined);
    if (selector === undefined) return undefined;
    const changes = [...(run.spec.recoveryPointChanges ?? []), selector];
    count = changes.length;
    return { recoveryPointChanges: changes };
  });
  process.stdout.write(`failoverrun.dr.ksr.io/${name} recovery point change ${count} requested\n`);
  if (flags.wait === true) {
    const prefix = `change-${count}/`;
    const changeDone = (run: FailoverRun) => {
      const steps = (run.status?.steps ?? []).filter((step) => step.name.startsWith(prefix));
      return (
        steps.length > 0 &&
        steps.every((step) => step.phase === "Succeeded" || step.phase === "Skipped") &&
        run.status?.phase === "Succeeded"
      );
    };
    await follow(connection, name, ["Committed"], timeoutMs, changeDone);
  }
}

async function patchMachine(command: Command, name: string, patch: Partial<ProtectedMachine>, done: string) {
  const connection = connect(flagsOf(command));
  await mustGet(connection, protectedMachines, name, "protectedmachine");
  await connection.client.patch(protectedMachines, { name, namespace: connection.namespace }, patch, "merge");
  process.stdout.write(`protectedmachine.dr.ksr.io/${name} ${done}\n`);
}

async function status(command: Command): Promise<void> {
  const flags = flagsOf(command);
  const connection = connect(flags);
  const namespace = connection.namespace;
  const [machines, plans, runs] = await Promise.all([
    connection.client.list(protectedMachines, { namespace }),
    connection.client.list(recoveryPlans, { namespace }),
    connection.client.list(failoverRuns, { namespace }),
  ]);
  if (flags.output === "json" || flags.output === "yaml") {
    print({ namespace, machines: machines.items, plans: plans.items, runs: runs.items }, flags.output);
    return;
  }
  const wide = flags.output === "wide";
  const sections = [
    machines.items.length === 0 ? "No ProtectedMachines.\n" : machineTable(machines.items, wide),
    plans.items.length === 0 ? "No RecoveryPlans.\n" : planTable(plans.items, wide),
    runs.items.length === 0 ? "No FailoverRuns.\n" : runTable(runs.items, wide, Date.now()),
  ];
  process.stdout.write(`Namespace ${namespace}\n\n${sections.join("\n")}`);
}

async function points(command: Command, name: string): Promise<void> {
  const flags = flagsOf(command);
  const connection = connect(flags);
  const machine = await mustGet(connection, protectedMachines, name, "protectedmachine");
  const summary = machine.status?.recoveryPoints;
  if (flags.output === "json" || flags.output === "yaml") {
    print({ machine: name, recoveryPoints: summary ?? {} }, flags.output);
    return;
  }
  const named: [string, RecoveryPointReference][] = [];
  for (const [which, point] of [
    ["latest", summary?.latest],
    ["latest app-consistent", summary?.latestAppConsistent],
    ["oldest", summary?.oldest],
  ] as const)
    if (point !== undefined) named.push([which, point]);
  // Every listed point, newest first, named where it is one of the three; an operator that lists
  // none (older than the list) still gives the three.
  const listed = [...(summary?.items ?? [])];
  for (const [, point] of named) if (!listed.some((item) => item.id === point.id)) listed.push(point);
  listed.sort((a, b) => Date.parse(b.time) - Date.parse(a.time));
  const rows = listed.map((point) => [
    named
      .filter(([, candidate]) => candidate.id === point.id)
      .map(([which]) => which)
      .join(", "),
    point.id,
    describePoint(point),
  ]);
  if (rows.length === 0) {
    process.stdout.write(
      `protectedmachine ${name} has no recovery points yet (phase ${machine.status?.phase ?? "unknown"})\n`,
    );
    return;
  }
  process.stdout.write(table(["POINT", "ID", "TIME (CONSISTENCY)"], rows));
  const kept = summary?.count ?? rows.length;
  process.stdout.write(
    `${kept} points kept${rows.length < kept ? `, ${rows.length} listed (the newest, and the oldest)` : ""}\n`,
  );
}

function pointOptions(command: Command, withPoint: boolean): Command {
  if (withPoint) command.option("--point <id>", "recover to this recovery point (single-machine runs)");
  return command
    .option("--time <rfc3339>", "recover to the newest point at or before this time")
    .option("--latest-app", "recover to the newest app-consistent point")
    .option("--latest", "apply every pending change first, then recover (lowest data loss)");
}

function waitOptions(command: Command): Command {
  return command
    .option("--wait", "follow the run until it finishes; exit non-zero if it fails")
    .option("--timeout <duration>", "with --wait: give up waiting after this long (the run goes on)");
}

export function kubectlDrProgram(): Command {
  const program = new Command("kubectl-dr")
    .description("kube-site-recovery operations from kubectl: drills, failovers, approvals and machine control")
    .version(version)
    .showSuggestionAfterError(true)
    .showHelpAfterError("(run kubectl dr --help for usage)");
  withKubeFlags(program, true);
  const sub = (name: string, description: string, output = false) =>
    withKubeFlags(program.command(name).description(description), output);

  program
    .command("version")
    .description("print the plugin version")
    .action(() => {
      process.stdout.write(`kubectl-dr ${version}\n`);
    });

  sub("status", "machines (phase, health, RPO, latest point), plans and runs of the namespace", true).action(
    (_options, command: Command) => status(command),
  );
  sub("points", "the recovery points a machine keeps, with their consistency", true)
    .argument("<machine>", "ProtectedMachine name")
    .action((machine: string, _options, command: Command) => points(command, machine));

  waitOptions(
    pointOptions(
      sub("test", "start a drill (test failover) of a plan or one machine into an isolated namespace", true)
        .argument("[plan]", "RecoveryPlan name")
        .option("--machine <name>", "drill a single ProtectedMachine instead of a plan")
        .option("--drill-namespace <namespace>", "namespace to recover into (default ksr-drill-RUN)")
        .option("--no-isolation", "do not fence the drill namespace with a NetworkPolicy")
        .option("--name <name>", "name of the FailoverRun (default PLAN-drill-TIME)"),
      true,
    ),
  ).action((plan: string | undefined, _options, command: Command) =>
    startRun(command, plan, "Test", (flags) => {
      const drillNamespace = flags.drillNamespace as string | undefined;
      if (drillNamespace !== undefined && !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(drillNamespace))
        throw new UsageError(`--drill-namespace ${JSON.stringify(drillNamespace)} is not a namespace name`);
      return {
        drill: {
          ...(drillNamespace === undefined ? {} : { namespace: drillNamespace }),
          isolation: flags.isolation === false ? "None" : "Isolated",
        },
      };
    }),
  );

  waitOptions(
    pointOptions(
      sub("failover", "fail a plan or one machine over to its recovery site", true)
        .argument("[plan]", "RecoveryPlan name")
        .option("--machine <name>", "fail over a single ProtectedMachine instead of a plan")
        .addOption(
          new Option("--planned", "stop the source, replicate everything, recover without data loss").conflicts(
            "unplanned",
          ),
        )
        .addOption(
          new Option("--unplanned", "recover from the recovery site's journal (the source is lost)").conflicts(
            "planned",
          ),
        )
        .option("--no-shutdown-source", "--unplanned: do not try to stop the source first")
        .option("--name <name>", "name of the FailoverRun (default PLAN-planned-TIME)"),
      true,
    ),
  ).action((plan: string | undefined, _options, command: Command) => {
    const flags = flagsOf(command) as RunFlags;
    if (flags.planned !== true && flags.unplanned !== true)
      throw new UsageError("say which failover: --planned (the source is up) or --unplanned (it is lost)");
    if (flags.planned === true && [flags.point, flags.time, flags.latestApp, flags.latest].some((f) => f !== undefined))
      throw new UsageError("a --planned failover replicates every change and takes no recovery point flag");
    if (flags.planned === true && flags.shutdownSource === false)
      throw new UsageError("--no-shutdown-source applies to --unplanned; a planned failover always stops the source");
    return startRun(command, plan, flags.planned === true ? "Planned" : "Unplanned", () =>
      flags.planned === true ? {} : { unplanned: { shutDownSource: flags.shutdownSource !== false } },
    );
  });

  waitOptions(
    sub("reprotect", "after a committed failover, replicate a plan or one machine back to the site it came from", true)
      .argument("[plan]", "RecoveryPlan name")
      .option("--machine <name>", "reprotect a single ProtectedMachine instead of a plan")
      .option("--name <name>", "name of the FailoverRun (default PLAN-reprotect-TIME)"),
  ).action((plan: string | undefined, _options, command: Command) => startRun(command, plan, "Reprotect", () => ({})));

  waitOptions(
    sub("approve", "approve a manual action of a run (GROUP/ACTION)")
      .argument("<run>", "FailoverRun name")
      .argument("<step>", "the manual action, as GROUP/ACTION")
      .option("--comment <text>", "kept with the approval")
      .option("--by <who>", "who approves (default: the user the API server sees)"),
  ).action((run: string, step: string, _options, command: Command) => approve(command, run, step));

  waitOptions(
    sub("commit", "make a failover final; its recovery points are released").argument("<run>", "FailoverRun name"),
  ).action((run: string, _options, command: Command) => setFlag(command, run, "commit"));
  waitOptions(sub("cleanup", "end a drill: delete what it created").argument("<run>", "FailoverRun name")).action(
    (run: string, _options, command: Command) => setFlag(command, run, "cleanup"),
  );
  waitOptions(
    sub("change-point", "before commit, move a failover to another retained recovery point")
      .argument("<run>", "FailoverRun name")
      .option("--point <id>", "the recovery point id (single-machine runs)")
      .option("--time <rfc3339>", "the newest point at or before this time")
      .option("--latest-app", "the newest app-consistent point"),
  ).action((run: string, _options, command: Command) => changePoint(command, run));

  sub("pause", "stop shipping a machine's changes (they are still tracked)")
    .argument("<machine>", "ProtectedMachine name")
    .action((machine: string, _options, command: Command) =>
      patchMachine(command, machine, { spec: { paused: true } } as Partial<ProtectedMachine>, "paused"),
    );
  sub("resume", "resume shipping a paused machine's changes")
    .argument("<machine>", "ProtectedMachine name")
    .action((machine: string, _options, command: Command) =>
      patchMachine(command, machine, { spec: { paused: false } } as Partial<ProtectedMachine>, "resumed"),
    );
  sub("resync", "compare a machine's volumes with their replicas and resend what differs")
    .argument("<machine>", "ProtectedMachine name")
    .action((machine: string, _options, command: Command) =>
      patchMachine(
        command,
        machine,
        { metadata: { name: machine, annotations: { [resyncRequestAnnotation]: new Date().toISOString() } } },
        "resync requested",
      ),
    );
  return program;
}

export async function kubectlDrMain(argv: string[]): Promise<void> {
  await runProgram(kubectlDrProgram(), argv);
}
