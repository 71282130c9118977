// `npm run demo`: the whole ASR cycle on `ksr local`, as a user would type it, one step after the
// other with what it does and how long it took: the cluster (started or reused), the operator,
// the shop (PostgreSQL written to by an API under load, a web tier), protection with live
// progress, a drill whose database is checked against the point from inside the drill namespace,
// a planned failover with its manual approval and commit, reprotect, failback (a planned run
// back, approved and committed) and reprotect again; with --unplanned, last, an unplanned
// failover: the primary site is powered off (`ksr local site down primary --mode power`), the plan
// fails over unplanned, approved and committed, the recovered orders are checked to be a prefix
// of what the API's own log on the lost site's disk acknowledged (the data lost measured against
// the writer, beside the run's figure), and the site comes back fenced, the shop left running in
// the recovery namespace. A closing table of each operation.
// Re-runnable (a previous demo's shop is removed first, a site a previous demo left down is
// brought back); Ctrl-C stops between requests (bringing a site it powered off back up) and
// leaves the cluster for `ksr local down`; --keep leaves everything running.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Command, InvalidArgumentError } from "commander";
import { KubeConfig } from "@kubernetes/client-node";
import { failoverRuns, protectedMachines, recoveryPlans, replicationPolicies, type FailoverRun } from "../api/types.js";
import { defaultNamespace, leaseName, operatorHealthPort, operatorName } from "../install/manifests.js";
import { defaultClusterDir, readClusterState } from "../local/cluster.js";
import { nodeLayout } from "../local/node/layout.js";
import { claimDataPath } from "../local/node/provisioner.js";
import { describeSite, siteIdentity, siteStates } from "../local/node/sites.js";
import {
  deployments,
  KubeClient,
  leases,
  namespaces,
  nodes,
  persistentVolumeClaims,
  pods,
  secrets,
  services,
  statefulSets,
  type KubeObject,
  type Pod,
  type ResourceType,
} from "../runtime/index.js";
import { formatDuration } from "../util/duration.js";
import { packageRoot } from "../util/package-root.js";
import {
  applicationManifests,
  defaultShopNamespace,
  loadGenerator,
  loadGeneratorName,
  machineNames,
  orderLogFile,
  parseOrderLog,
  planName,
  protectionManifests,
  shopNamespaces,
  spoolClaimName,
  type ShopNamespaces,
} from "./shop.js";

const fieldManager = "ksr-demo";
const typesByKind: Record<string, ResourceType<KubeObject>> = {
  StatefulSet: statefulSets,
  Deployment: deployments,
  Service: services,
  PersistentVolumeClaim: persistentVolumeClaims,
  ReplicationPolicy: replicationPolicies,
  ProtectedMachine: protectedMachines,
  RecoveryPlan: recoveryPlans,
};

class Interrupted extends Error {}

/** Not applicable to the operation (a protect has no RTO), as opposed to a figure the product did not report. */
const notApplicable = "n/a";
const notReported = "not reported";

interface Row {
  operation: string;
  rpoBefore: string;
  rto: string;
  dataLoss: string;
  bytes: string;
  took: string;
}

type Site = "primary" | "recovery";

interface Context {
  dir: string;
  kubeconfig: string;
  ns: ShopNamespaces;
  /** Orders the shop holds before it is protected; the reduced demo waits for fewer. */
  ordersFirst: number;
  /** The plan's web warm-up: the examples' 30 s, 2 s in the reduced demo. */
  warmUp: string;
  /** Whether the demo ends with an unplanned failover (--unplanned). */
  unplanned: boolean;
  client: KubeClient;
  signal: AbortSignal;
  rows: Row[];
  /** Lines under the table's legend: figures of an operation that have no column. */
  notes: string[];
  timings: [string, number][];
  /** The namespace the shop runs in now. */
  shopAt: string;
  /** A site the demo powered off and has not brought back yet: whatever happens, it is brought back. */
  downSite?: Site;
}

const tty = process.stdout.isTTY;
const say = (line: string) => process.stdout.write(`${line}\n`);
/**
 * A progress line: rewritten in place on a terminal; otherwise one plain line per change, or at
 * most one per `plainEveryMs` for a figure that changes all the time (a count), each with the time
 * since the wait began. A change of `stage` (a run's next step) is printed at once.
 */
function progress(plainEveryMs = 0): { update(line: string, stage?: string): void; done(): void } {
  let last = "";
  let lastStage: string | undefined;
  let printedAt = 0;
  let unsaid = false;
  const started = performance.now();
  const elapsed = () => `${((performance.now() - started) / 1000).toFixed(0)} s`;
  return {
    update(line: string, stage?: string) {
      // An unchanged line still goes out once its wait is over: a change the wait held back is printed late, not lost.
      const changed = line !== last;
      const staged = stage !== lastStage;
      last = line;
      lastStage = stage;
      if (changed) unsaid = true;
      if (!unsaid) return;
      if (tty) {
        if (changed) process.stdout.write(`\r\x1b[2K    ${line}`);
      } else if (staged || performance.now() - printedAt >= plainEveryMs) {
        printedAt = performance.now();
        unsaid = false;
        say(`    ${line} (+${elapsed()})`);
      }
    },
    done() {
      if (tty && last !== "") process.stdout.write("\n");
      else if (!tty && unsaid) say(`    ${last} (+${elapsed()})`);
    },
  };
}

function run(
  command: string,
  args: string[],
  signal: AbortSignal,
  options: { quiet?: boolean; env?: NodeJS.ProcessEnv } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], env: options.env ?? process.env, signal });
    let out = "";
    let err = "";
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      if (options.quiet !== true) process.stdout.write(chunk.toString().replace(/^(?=.)/gm, "    "));
    });
    child.stderr.on("data", (chunk: Buffer) => {
      err += chunk.toString();
      if (options.quiet !== true) process.stdout.write(chunk.toString().replace(/^(?=.)/gm, "    "));
    });
    child.once("error", (error) => {
      reject(signal.aborted ? new Interrupted() : error);
    });
    child.once("exit", (code) => {
      if (code === 0) resolve(out);
      else
        reject(
          new Error(
            `${command} ${args.join(" ")} exited ${code}: ${(err || out).trim().split("\n").slice(-5).join("\n")}`,
          ),
        );
    });
  });
}

const ksr = (ctx: Context, args: string[], quiet = false) =>
  run(process.execPath, [join(packageRoot, "bin", "ksr.js"), ...args], ctx.signal, { quiet });
const kubectlDr = (ctx: Context, args: string[], quiet = false) =>
  run(
    process.execPath,
    [join(packageRoot, "bin", "kubectl-dr.js"), "--kubeconfig", ctx.kubeconfig, "-n", ctx.ns.shop, ...args],
    ctx.signal,
    { quiet },
  );

async function until<T>(
  ctx: Context,
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs: number,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (ctx.signal.aborted) throw new Interrupted();
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${formatDuration(timeoutMs)} waiting for ${what}`);
    await sleep(1000, undefined, { signal: ctx.signal }).catch(() => undefined);
  }
}

async function step<T>(ctx: Context, name: string, body: () => Promise<T>): Promise<T> {
  say(`▶ ${name}`);
  const started = performance.now();
  const result = await body();
  const seconds = (performance.now() - started) / 1000;
  ctx.timings.push([name, seconds]);
  say(`✔ ${name} (${seconds.toFixed(1)} s)`);
  return result;
}

/** While a long child runs (a cold control-plane build takes 10-30 minutes), a line a minute says it still does. */
async function withHeartbeat<T>(what: string, body: Promise<T>): Promise<T> {
  const started = performance.now();
  const timer = setInterval(() => {
    say(`    … ${what}: ${formatDuration(performance.now() - started)} so far`);
  }, 60_000);
  try {
    return await body;
  } finally {
    clearInterval(timer);
  }
}

async function databasePod(ctx: Context, namespace: string): Promise<Pod | undefined> {
  const { items } = await ctx.client.list(pods, {
    namespace,
    labelSelector: "app.kubernetes.io/name=shop,app.kubernetes.io/component=database",
  });
  return items.find(
    (pod) =>
      pod.metadata.deletionTimestamp === undefined &&
      pod.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"),
  );
}

/**
 * A query's rows (psql -tA: one line per row), run by `kubectl exec` in the database's own pod: a
 * drill's namespace is isolated by a NetworkPolicy, so nothing outside it may connect to the
 * database. SQL goes inside double quotes of a shell command: it must hold neither `"` nor `$`.
 */
async function psql(ctx: Context, namespace: string, sql: string): Promise<string> {
  const pod = await databasePod(ctx, namespace);
  if (pod === undefined) throw new Error(`no ready database pod in namespace ${namespace}`);
  const kubectl = join(readClusterState(ctx.dir)?.binDir ?? "", "kubectl");
  const query = `PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 -U postgres -tAc "${sql}"`;
  return run(
    kubectl,
    [
      "--kubeconfig",
      ctx.kubeconfig,
      "-n",
      namespace,
      "exec",
      pod.metadata.name,
      "-c",
      "postgres",
      "--",
      "sh",
      "-c",
      query,
    ],
    ctx.signal,
    { quiet: true },
  );
}

/** SELECT count(*) FROM orders, in the database's pod. */
async function orderCount(ctx: Context, namespace: string): Promise<number> {
  const out = (await psql(ctx, namespace, "SELECT count(*) FROM orders")).trim();
  const count = Number(out);
  if (out === "" || !Number.isInteger(count))
    throw new Error(`psql in ${namespace} answered ${JSON.stringify(out)} to SELECT count(*)`);
  return count;
}

/** The order count once the database in the namespace is ready and answers. */
const settledOrderCount = (ctx: Context, namespace: string, what: string) =>
  until(ctx, what, () => orderCount(ctx, namespace).catch(() => undefined), 5 * 60_000);

async function apply(
  ctx: Context,
  namespace: string,
  objects: (KubeObject & Record<string, unknown>)[],
): Promise<void> {
  for (const object of objects) {
    const type = typesByKind[object.kind ?? ""];
    if (type === undefined) throw new Error(`the demo cannot apply a ${object.kind ?? "kindless object"}`);
    await ctx.client.apply(
      type,
      { ...object, metadata: { ...object.metadata, namespace } },
      { fieldManager, force: true },
    );
  }
}

const startLoad = (ctx: Context, namespace: string, site: Site) => apply(ctx, namespace, [loadGenerator(site)]);

/** Stops the load generator and waits until its pod is gone: from then on the order count holds still. */
async function holdLoad(ctx: Context, namespace: string): Promise<void> {
  await ctx.client.delete(deployments, { name: loadGeneratorName, namespace });
  await until(
    ctx,
    `the load generator in ${namespace} stopped`,
    async () =>
      (
        await ctx.client.list(pods, {
          namespace,
          labelSelector: `app.kubernetes.io/name=${loadGeneratorName}`,
        })
      ).items.length === 0
        ? true
        : undefined,
    2 * 60_000,
  );
}

/** A previous demo's shop: runs, machines and plan go first (the operator clears their finalizers), then the namespaces. */
async function removePreviousShop(ctx: Context): Promise<boolean> {
  if ((await ctx.client.get(namespaces, ctx.ns.shop)) === undefined) return false;
  for (const type of [
    failoverRuns,
    protectedMachines,
    recoveryPlans,
    replicationPolicies,
  ] as ResourceType<KubeObject>[]) {
    const { items } = await ctx.client.list(type, { namespace: ctx.ns.shop });
    for (const item of items) await ctx.client.delete(type, { name: item.metadata.name, namespace: ctx.ns.shop });
    await until(
      ctx,
      `the previous demo's ${type.plural} gone`,
      async () => ((await ctx.client.list(type, { namespace: ctx.ns.shop })).items.length === 0 ? true : undefined),
      5 * 60_000,
    );
  }
  const all = [ctx.ns.shop, ctx.ns.recovery, ctx.ns.drill];
  for (const name of all) await ctx.client.delete(namespaces, { name });
  await until(
    ctx,
    "the previous demo's namespaces gone",
    async () => {
      for (const name of all) if ((await ctx.client.get(namespaces, name)) !== undefined) return undefined;
      return true;
    },
    5 * 60_000,
  );
  return true;
}

const machine = (ctx: Context, name: string) => ctx.client.get(protectedMachines, name, ctx.ns.shop);
const rpoOf = async (ctx: Context) => (await machine(ctx, "shop-db"))?.status?.rpo ?? notApplicable;

/**
 * Bytes the recovery site made durable so far for the shop: the leading operator's
 * ksr_replicated_bytes_total, with the leader's pod (the counter is its process's own).
 */
async function replicatedBytes(ctx: Context): Promise<{ leader: string; bytes: number }> {
  const holder = (await ctx.client.get(leases, leaseName, defaultNamespace))?.spec?.holderIdentity ?? "";
  const { items } = await ctx.client.list(pods, {
    namespace: defaultNamespace,
    labelSelector: `app.kubernetes.io/name=${operatorName}`,
  });
  const leader = items.find((pod) => holder.startsWith(`${pod.metadata.name}_`));
  if (leader?.status?.podIP === undefined) return { leader: holder, bytes: Number.NaN };
  const text = await fetch(`http://${leader.status.podIP}:${operatorHealthPort}/metrics`, { signal: ctx.signal })
    .then((response) => response.text())
    .catch(() => undefined);
  if (text === undefined) return { leader: leader.metadata.name, bytes: Number.NaN };
  let total = 0;
  for (const match of text.matchAll(/^ksr_replicated_bytes_total\{([^}]*)\} (\S+)$/gm))
    if ((match[1] ?? "").includes(`namespace="${ctx.ns.shop}"`)) total += Number(match[2]);
  return { leader: leader.metadata.name, bytes: total };
}

/** Every machine Protected (in whichever direction), with each one's phase and copy progress on one live line. */
async function waitProtected(ctx: Context): Promise<void> {
  const line = progress(5_000);
  try {
    await until(
      ctx,
      "every machine Protected",
      async () => {
        const found = await Promise.all(machineNames.map((name) => machine(ctx, name)));
        line.update(
          found
            .map((m, i) => {
              const phase = m?.status?.phase ?? "—";
              const copy = m?.status?.initialReplication;
              const percent = phase === "InitialReplication" ? ` ${copy?.progressPercent ?? 0}%` : "";
              return `${machineNames[i]} ${phase}${percent}`;
            })
            .join(", "),
        );
        return found.every(
          (m) => m?.status?.phase === "Protected" && m.status.observedGeneration === m.metadata.generation,
        )
          ? true
          : undefined;
      },
      15 * 60_000,
    );
  } finally {
    line.done();
  }
}

/**
 * Waits for a run's phase, with the step it is at and that step's own message on the progress
 * line: what a long step waits for (a copy's percentage, a pod's readiness) is what a stuck demo
 * leaves on screen.
 */
async function waitRun(ctx: Context, name: string, phases: string[], timeoutMs: number): Promise<FailoverRun> {
  const line = progress(10_000);
  try {
    return await until(
      ctx,
      `FailoverRun ${name} in ${phases.join(" or ")}`,
      async () => {
        const found = await ctx.client.get(failoverRuns, name, ctx.ns.shop);
        const phase = found?.status?.phase ?? "Pending";
        const current = found?.status?.steps?.find((s) => s.phase === "Running" || s.phase === "WaitingForApproval");
        const stage = `${name}: ${phase}${current === undefined ? "" : ` — ${current.name} ${current.phase}`}`;
        const says = current?.message === undefined || current.message === "" ? "" : `: ${current.message}`;
        line.update(`${stage}${says}`, stage);
        if (phase === "Failed" && !phases.includes("Failed")) {
          const failed = found?.status?.steps?.find((s) => s.phase === "Failed");
          throw new Error(`FailoverRun ${name} failed at ${failed?.name ?? "?"}: ${failed?.message ?? ""}`);
        }
        return phases.includes(phase) ? found : undefined;
      },
      timeoutMs,
    );
  } finally {
    line.done();
  }
}

const runName = (kind: string) => `demo-${kind}-${Date.now().toString(36)}`;

/** Runs an operation and records its row: RPO before it, the run's RTO and data-loss window, the bytes replicated meanwhile. */
async function measured(
  ctx: Context,
  operation: string,
  body: () => Promise<FailoverRun | undefined>,
  figures: { rto: boolean; dataLoss: boolean },
): Promise<void> {
  const started = performance.now();
  const rpoBefore = await rpoOf(ctx);
  const before = await replicatedBytes(ctx);
  const done = await body();
  const after = await replicatedBytes(ctx);
  // The counter is per operator process: across a change of leader (one whose site was lost) the difference means nothing.
  if (after.leader !== before.leader)
    say(`    bytes moved: not reported, the leading operator changed from ${before.leader} to ${after.leader}`);
  const bytes = after.leader === before.leader ? after.bytes - before.bytes : Number.NaN;
  const figure = (wanted: boolean, value: string | undefined) => (wanted ? (value ?? notReported) : notApplicable);
  ctx.rows.push({
    operation,
    rpoBefore,
    rto: figure(figures.rto, done?.status?.rto),
    dataLoss: figure(figures.dataLoss, done?.status?.dataLossWindow),
    bytes: Number.isNaN(bytes) || bytes < 0 ? notReported : `${(bytes / 2 ** 20).toFixed(1)} MiB`,
    took: `${((performance.now() - started) / 1000).toFixed(1)} s`,
  });
}

/**
 * The rest of a failover of the plan: its manual step (database/confirm, whose runOn is Planned
 * and Unplanned) approved as the demo, then the run until it Succeeded.
 */
async function approved(ctx: Context, name: string, comment: string): Promise<FailoverRun> {
  await waitRun(ctx, name, ["WaitingForApproval"], 10 * 60_000);
  say("    the plan asks for a person's approval (database/confirm); approving as the demo");
  await kubectlDr(ctx, ["approve", name, "database/confirm", "--comment", comment]);
  return waitRun(ctx, name, ["Succeeded"], 15 * 60_000);
}

/** Makes a failover final and moves the load to where the shop now runs. */
async function commit(ctx: Context, name: string, to: string, site: Site): Promise<void> {
  await kubectlDr(ctx, ["commit", name]);
  await waitRun(ctx, name, ["Committed"], 5 * 60_000);
  ctx.shopAt = to;
  await startLoad(ctx, to, site);
}

/**
 * A planned failover of the plan (the first one, or the failback after a reprotect): writes are
 * held, the run waits for the plan's manual approval, the recovered database must hold every order
 * the source had, then the run is committed and the load resumes where the shop now runs.
 */
async function plannedFailover(ctx: Context, from: string, to: string, site: Site): Promise<FailoverRun> {
  await holdLoad(ctx, from);
  const count = await settledOrderCount(ctx, from, `the database in ${from} answering`);
  say(`    writes held at ${count} orders in ${from}, as a planned failover's maintenance window does`);
  const name = runName(site === "recovery" ? "failover" : "failback");
  await kubectlDr(ctx, ["failover", planName, "--planned", "--name", name]);
  const done = await approved(ctx, name, "npm run demo");
  const recovered = await settledOrderCount(ctx, to, `the recovered database in ${to} answering`);
  if (recovered !== count)
    throw new Error(`the database recovered into ${to} has ${recovered} orders; ${from} had ${count}`);
  say(`    the shop runs in ${to} on the ${site} site with all ${recovered} orders; committing`);
  await commit(ctx, name, to, site);
  return done;
}

async function reprotect(ctx: Context, kind: string): Promise<FailoverRun> {
  const name = runName(kind);
  await kubectlDr(ctx, ["reprotect", planName, "--name", name]);
  const done = await waitRun(ctx, name, ["Succeeded"], 15 * 60_000);
  await waitProtected(ctx);
  return done;
}

const siteCommand = (ctx: Context, verb: "down" | "up", site: Site) =>
  `npx ksr local site ${verb} ${site}${verb === "down" ? " --mode power" : ""} --dir ${ctx.dir}`;

/**
 * Brings back the site the demo powered off, whatever stopped the demo: the cluster is shared (the
 * e2e suites run on it after the demo test) and a lost site breaks everything after. Not tied to
 * the demo's signal, which Ctrl-C has aborted by then; if it fails, the line says how to by hand.
 */
async function restoreSite(ctx: Context): Promise<void> {
  const site = ctx.downSite;
  if (site === undefined) return;
  say(
    `    the ${site} site is still down from the unplanned failover; bringing it back: ${siteCommand(ctx, "up", site)}`,
  );
  try {
    await run(
      process.execPath,
      [join(packageRoot, "bin", "ksr.js"), "local", "site", "up", site, "--dir", ctx.dir],
      AbortSignal.timeout(3 * 60_000),
      { quiet: true },
    );
    ctx.downSite = undefined;
    say(`    the ${site} site is up again`);
  } catch (error) {
    const why = error instanceof Interrupted ? "it took over 3 minutes" : String(error);
    say(`✘ the ${site} site could not be brought back (${why}); \`${siteCommand(ctx, "up", site)}\` does it`);
  }
}

/** Until every machine has a recovery point taken after the wait began: the site is then lost just after a point. */
async function freshPoint(ctx: Context): Promise<void> {
  const since = Date.now();
  const times = await until(
    ctx,
    "a recovery point of every machine taken after the wait began",
    async () => {
      const found = await Promise.all(machineNames.map((name) => machine(ctx, name)));
      const latest = found.map((m) => Date.parse(m?.status?.recoveryPoints?.latest?.time ?? ""));
      return latest.every((time) => time > since) ? latest : undefined;
    },
    3 * 60_000,
  );
  const age = (Date.now() - Math.min(...times)) / 1000;
  say(`    every machine has a recovery point ${age.toFixed(1)} s old; the load keeps running`);
}

/** The items of the recovered database's orders taken before `beforeMs`: what came from the source, not what the recovered shop took since. */
async function recoveredItems(ctx: Context, namespace: string, beforeMs: number): Promise<bigint[]> {
  const out = await until(
    ctx,
    `the recovered database in ${namespace} answering`,
    () => psql(ctx, namespace, "SELECT item FROM orders ORDER BY id").catch(() => undefined),
    5 * 60_000,
  );
  const items = out
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => {
      if (!/^\d+$/.test(line))
        throw new Error(`the recovered database has an order whose item is ${JSON.stringify(line)}`);
      return BigInt(line);
    });
  return items.filter((item) => item < BigInt(beforeMs) * 1_000_000n);
}

const nsToMs = (item: bigint) => Number(item / 1_000_000n);

/**
 * The recovered orders against the writer's own log: they must be a prefix of what the source
 * acknowledged (every acknowledged order up to the newest recovered one is there, every recovered
 * one is in the log, none is after the point), and what the source acknowledged after them is the
 * data lost. Fails loudly otherwise: this is the check the unplanned failover is measured by.
 */
function checkAgainstWriter(
  logged: ReturnType<typeof parseOrderLog>,
  recovered: bigint[],
  pointTime: string,
): { lostOrders: number; windowMs: number; newestMs: number } {
  const acknowledged = logged.filter((order) => order.code === 200).map((order) => BigInt(order.item));
  const inLog = new Set(logged.map((order) => order.item));
  const newest = recovered.reduce((a, b) => (b > a ? b : a), 0n);
  const lastLogged = logged.reduce((a, order) => (BigInt(order.item) > a ? BigInt(order.item) : a), 0n);
  if (acknowledged.length === 0 || recovered.length === 0)
    throw new Error(`nothing to compare: ${acknowledged.length} orders acknowledged, ${recovered.length} recovered`);
  // One order may have been committed and never logged: the one in flight as the power went, the newest of all.
  const unlogged = recovered.filter((item) => !inLog.has(item.toString()));
  if (unlogged.length > 1 || unlogged.some((item) => item <= lastLogged))
    throw new Error(
      `the recovered database has ${unlogged.length} orders the source's log does not have (${unlogged.slice(0, 3).join(", ")}): not the source's data`,
    );
  const present = new Set(recovered);
  const missing = acknowledged.filter((item) => item <= newest && !present.has(item));
  if (missing.length > 0)
    throw new Error(
      `the recovered orders are not a prefix of what the source acknowledged: ${missing.length} acknowledged before the newest recovered one are missing, the first taken at ${new Date(nsToMs(missing[0] ?? 0n)).toISOString()}`,
    );
  // A point's time is whole seconds; the cut is at or after the last order it holds.
  if (nsToMs(newest) >= Date.parse(pointTime) + 1000)
    throw new Error(
      `the recovered database has an order taken at ${new Date(nsToMs(newest)).toISOString()}, after its point (${pointTime})`,
    );
  const lost = acknowledged.filter((item) => item > newest);
  const lastAcknowledged = acknowledged.reduce((a, b) => (b > a ? b : a), 0n);
  return {
    lostOrders: lost.length,
    windowMs: lost.length === 0 ? 0 : nsToMs(lastAcknowledged) - nsToMs(newest),
    newestMs: nsToMs(newest),
  };
}

/**
 * An unplanned failover: the primary site loses power under load, the plan fails over from the
 * recovery site's journal (its manual step approved: runOn includes Unplanned), the recovered
 * orders are checked against the API's own log, read from the lost site's disk on the host (the
 * site is off, its volumes stay), and the run is committed; the load resumes on the recovery site.
 */
async function unplannedFailover(ctx: Context): Promise<FailoverRun> {
  const { ns } = ctx;
  const claim = await ctx.client.get(persistentVolumeClaims, spoolClaimName, ns.shop);
  if (claim?.metadata.uid === undefined) throw new Error(`no claim ${ns.shop}/${spoolClaimName}`);
  const spool = join(
    claimDataPath(nodeLayout(ctx.dir), siteIdentity("primary").name, claim.metadata.uid),
    orderLogFile,
  );
  ctx.downSite = "primary";
  say(`    powering the primary site off: ${siteCommand(ctx, "down", "primary")}`);
  await ksr(ctx, ["local", "site", "down", "primary", "--mode", "power", "--dir", ctx.dir], true);
  const poweredOff = Date.now();
  // Every process of the site was killed at once: the log on its disk is final.
  const logged = parseOrderLog(await readFile(spool, "utf8"));
  const acknowledged = logged.filter((order) => order.code === 200);
  say(
    `    the API's own log (${spool}, the lost site's disk) acknowledged ${acknowledged.length} orders, the last at ${new Date(nsToMs(BigInt(acknowledged.at(-1)?.item ?? "0"))).toISOString()}`,
  );
  const name = runName("unplanned");
  await kubectlDr(ctx, ["failover", planName, "--unplanned", "--name", name]);
  const done = await approved(ctx, name, "npm run demo --unplanned");
  const point = done.status?.recoveryPoints?.find((p) => p.machine === "shop-db");
  if (point === undefined) throw new Error(`FailoverRun ${name} records no recovery point for shop-db`);
  const recovered = await recoveredItems(ctx, ns.recovery, poweredOff);
  const { lostOrders, windowMs, newestMs } = checkAgainstWriter(logged, recovered, point.time);
  say(
    `    the ${recovered.length} orders recovered into ${ns.recovery} (point ${point.id} at ${point.time}, newest order ${new Date(newestMs).toISOString()}) are a prefix of the ${acknowledged.length} the source acknowledged`,
  );
  // The writer's figure is the database's orders; the run's is its worst volume of any machine: each machine's point says which.
  const points = (done.status?.recoveryPoints ?? []).map((p) => `${p.machine} ${p.time} (${p.consistency})`);
  say(`    the run's recovery points: ${points.join(", ")}`);
  const writer = `${(windowMs / 1000).toFixed(1)} s (${lostOrders} acknowledged orders)`;
  say(
    `    data lost measured against the writer's log: ${writer}; the run's status.dataLossWindow: ${done.status?.dataLossWindow ?? notReported}; RTO ${done.status?.rto ?? notReported}`,
  );
  ctx.notes.push(
    `Unplanned failover: the writer's own log puts the data lost at ${writer} after the newest recovered order.`,
  );
  // The load generator was lost with the site; it must not come back there with the site.
  await ctx.client.delete(deployments, { name: loadGeneratorName, namespace: ns.shop });
  await commit(ctx, name, ns.recovery, "recovery");
  say(`    committed; the shop runs in ${ns.recovery} on the recovery site, under load`);
  return done;
}

/** The lost site comes back: its node Ready, and the source stays fenced (no pod of the shop or its agents, every source workload at 0). */
async function siteReturnsFenced(ctx: Context): Promise<void> {
  const { ns } = ctx;
  say(`    bringing the primary site back: ${siteCommand(ctx, "up", "primary")}`);
  await ksr(ctx, ["local", "site", "up", "primary", "--dir", ctx.dir], true);
  ctx.downSite = undefined;
  const node = siteIdentity("primary").name;
  await until(
    ctx,
    `node ${node} Ready`,
    async () =>
      (await ctx.client.get(nodes, node))?.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True")
        ? true
        : undefined,
    3 * 60_000,
  );
  await until(
    ctx,
    `no pod of the shop or its agents left in ${ns.shop}`,
    async () => {
      const left = (await ctx.client.list(pods, { namespace: ns.shop })).items.filter(
        (pod) =>
          pod.metadata.labels?.["app.kubernetes.io/name"] === "shop" ||
          pod.metadata.labels?.["app.kubernetes.io/component"] === "agent",
      );
      return left.length === 0 ? true : undefined;
    },
    3 * 60_000,
  );
  const workloads = [
    ["StatefulSet", await ctx.client.get(statefulSets, "shop-db", ns.shop)],
    ["Deployment", await ctx.client.get(deployments, "shop-api", ns.shop)],
    ["Deployment", await ctx.client.get(deployments, "shop-web", ns.shop)],
  ] as const;
  for (const [kind, workload] of workloads)
    if (workload?.spec?.replicas !== 0)
      throw new Error(
        `the returned source is not fenced: ${kind} ${ns.shop}/${workload?.metadata.name ?? "?"} has ${workload?.spec?.replicas ?? "no"} replicas`,
      );
  say(
    `    node ${node} is Ready and the source stays fenced: no pod of the shop or its agents in ${ns.shop}, shop-db, shop-api and shop-web at 0 replicas`,
  );
}

async function demo(ctx: Context, password: string): Promise<void> {
  const { ns } = ctx;
  await step(ctx, "cluster: reuse a running `ksr local`, or start one", async () => {
    const running = await ksr(ctx, ["local", "status", "--dir", ctx.dir], true).then(
      () => true,
      () => false,
    );
    if (running) say(`    reusing the cluster running in ${ctx.dir}`);
    else
      await withHeartbeat(
        "starting the cluster (building the control plane first if it is not built yet)",
        ksr(ctx, ["local", "up", "--dir", ctx.dir]),
      );
    // A site stays down across restarts: an unplanned demo stopped at once (Ctrl-C twice) leaves the primary one off.
    for (const { site, state } of siteStates(ctx.dir))
      if (state !== undefined && !state.up) {
        say(`    the ${site} site is ${describeSite(state)}; the demo needs both: ksr local site up ${site}`);
        await ksr(ctx, ["local", "site", "up", site, "--dir", ctx.dir]);
      }
  });
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(ctx.kubeconfig);
  ctx.client = new KubeClient(kubeConfig);

  await step(ctx, "operator: ksr install --wait", async () => {
    await ksr(ctx, ["install", "--kubeconfig", ctx.kubeconfig, "--wait"]);
  });

  await step(ctx, "shop: PostgreSQL, an API under a load generator, a web tier", async () => {
    if (await removePreviousShop(ctx)) say("    removed the previous demo's shop");
    // The recovery namespace holds the replicas from the start; the operator copies the database's
    // Secret there (and into the drill's namespace, which the drill creates) when it recovers.
    for (const name of [ns.shop, ns.recovery]) await ctx.client.create(namespaces, { metadata: { name } });
    await ctx.client.create(secrets, { metadata: { name: "shop-db", namespace: ns.shop }, stringData: { password } });
    await ctx.client.create(secrets, {
      metadata: { name: "shop-dr-key", namespace: ns.shop },
      data: { key: randomBytes(32).toString("base64") },
    });
    await apply(ctx, ns.shop, applicationManifests());
    await startLoad(ctx, ns.shop, "primary");
    const line = progress(10_000);
    const count = await until(
      ctx,
      `${ctx.ordersFirst} orders in the database`,
      async () => {
        const orders = await orderCount(ctx, ns.shop).catch(() => undefined);
        line.update(orders === undefined ? "waiting for PostgreSQL and the API" : `${orders} orders`);
        return orders !== undefined && orders >= ctx.ordersFirst ? orders : undefined;
      },
      5 * 60_000,
    );
    line.done();
    say(`    ${count} orders written so far, and counting`);
  });

  await step(ctx, "protect: the policy, three ProtectedMachines and the recovery plan", () =>
    measured(
      ctx,
      "protect (initial replication)",
      async () => {
        await apply(ctx, ns.shop, protectionManifests(ns.recovery, ctx.warmUp));
        await waitProtected(ctx);
        return undefined;
      },
      { rto: false, dataLoss: false },
    ),
  );

  await step(ctx, "drill: kubectl dr test, check the drilled database against the point, clean up", () =>
    measured(
      ctx,
      "drill (test failover)",
      async () => {
        // Hold the load so the point has a known order count: every order is durable before the point's time.
        await holdLoad(ctx, ns.shop);
        const count = await orderCount(ctx, ns.shop);
        const quiet = Date.now();
        say(`    load held at ${count} orders; waiting for a recovery point after it`);
        await until(
          ctx,
          "a recovery point newer than the last order",
          async () => {
            const latest = (await machine(ctx, "shop-db"))?.status?.recoveryPoints?.latest?.time;
            return latest !== undefined && Date.parse(latest) > quiet + 1000 ? latest : undefined;
          },
          5 * 60_000,
        );
        const name = runName("drill");
        const time = new Date().toISOString();
        await kubectlDr(ctx, ["test", planName, "--name", name, "--drill-namespace", ns.drill, "--time", time]);
        const drill = await waitRun(ctx, name, ["Succeeded"], 15 * 60_000);
        await startLoad(ctx, ns.shop, "primary");
        const drilled = await settledOrderCount(ctx, ns.drill, "the drilled database answering");
        if (drilled !== count) throw new Error(`the drilled database has ${drilled} orders; the point had ${count}`);
        say(`    the drilled database in ${ns.drill} has ${drilled} orders, as at the point (read inside ${ns.drill})`);
        await kubectlDr(ctx, ["cleanup", name]);
        await waitRun(ctx, name, ["CleanedUp"], 5 * 60_000);
        return drill;
      },
      { rto: true, dataLoss: true },
    ),
  );

  await step(ctx, "planned failover: kubectl dr failover --planned, approve, commit", () =>
    measured(ctx, "planned failover + commit", () => plannedFailover(ctx, ns.shop, ns.recovery, "recovery"), {
      rto: true,
      dataLoss: true,
    }),
  );

  await step(ctx, "reprotect: replicate the recovered shop back to the primary site", () =>
    measured(ctx, "reprotect (recovery → primary)", () => reprotect(ctx, "reprotect"), {
      rto: false,
      dataLoss: false,
    }),
  );

  await step(ctx, "failback: kubectl dr failover --planned back to the primary site, approve, commit", () =>
    measured(ctx, "failback (planned) + commit", () => plannedFailover(ctx, ns.recovery, ns.shop, "primary"), {
      rto: true,
      dataLoss: true,
    }),
  );

  await step(ctx, "reprotect: the original direction again", () =>
    measured(ctx, "reprotect (primary → recovery)", () => reprotect(ctx, "reprotect-back"), {
      rto: false,
      dataLoss: false,
    }),
  );

  if (!ctx.unplanned) return;
  await step(
    ctx,
    "unplanned failover: the primary site powered off, kubectl dr failover --unplanned, approve, commit; the site returns fenced",
    async () => {
      await freshPoint(ctx);
      await measured(ctx, "unplanned failover + commit", () => unplannedFailover(ctx), { rto: true, dataLoss: true });
      await siteReturnsFenced(ctx);
    },
  );
}

function table(rows: Row[], notes: string[]): string {
  const header: Row = {
    operation: "operation",
    rpoBefore: "RPO before",
    rto: "RTO",
    dataLoss: "data loss",
    bytes: "bytes moved",
    took: "took",
  };
  const all = [header, ...rows];
  const keys = Object.keys(header) as (keyof Row)[];
  const widths = keys.map((key) => Math.max(...all.map((r) => r[key].length)));
  const line = (r: Row) =>
    keys
      .map((key, i) => r[key].padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  return [
    line(header),
    widths.map((w) => "-".repeat(w)).join("  "),
    ...rows.map(line),
    "",
    "RPO before: shop-db's status.rpo as the operation started. RTO and data loss: the FailoverRun's",
    "status.rto and status.dataLossWindow. Bytes moved: the operator's ksr_replicated_bytes_total for",
    `the shop, during the operation. ${notApplicable}: not a figure of that operation.`,
    ...notes,
  ].join("\n");
}

function shopNamespaceOption(value: string): string {
  // The drill and recovery namespaces append "-drill" and "-recovery" to it (63 characters at most).
  if (!/^[a-z0-9]([-a-z0-9]{0,42}[a-z0-9])?$/.test(value))
    throw new InvalidArgumentError("a DNS label of at most 44 characters (lower-case letters, digits, '-')");
  return value;
}

async function main(): Promise<void> {
  const program = new Command("demo")
    .description("the ASR cycle on ksr local: protect the shop, drill it, fail it over and back")
    .option("--dir <dir>", "the ksr local cluster to start or reuse", defaultClusterDir)
    .option(
      "--namespace <name>",
      "the shop's namespace (recovered into NAME-recovery, drilled in NAME-drill)",
      shopNamespaceOption,
      defaultShopNamespace,
    )
    .option("--small", "the reduced demo CI runs: fewer orders before protecting, a shorter warm-up; the same steps")
    .option(
      "--unplanned",
      "end with an unplanned failover: power the primary site off under load (ksr local site down primary " +
        "--mode power), kubectl dr failover --unplanned, approve, commit; its RTO, and the data lost measured " +
        "against the API's own log on the lost site's disk beside the run's figure; the site comes back fenced " +
        "and the shop ends in NAME-recovery",
    )
    .option("--keep", "leave the shop and the operator running at the end (explore with kubectl)")
    .parse();
  const options = program.opts<{
    dir: string;
    namespace: string;
    small?: boolean;
    unplanned?: boolean;
    keep?: boolean;
  }>();
  const abort = new AbortController();
  const ns = shopNamespaces(options.namespace);
  const ctx: Context = {
    dir: options.dir,
    kubeconfig: join(options.dir, "kubeconfig"),
    ns,
    ordersFirst: options.small === true ? 20 : 100,
    warmUp: options.small === true ? "2s" : "30s",
    unplanned: options.unplanned === true,
    client: undefined as unknown as KubeClient,
    signal: abort.signal,
    rows: [],
    notes: [],
    timings: [],
    shopAt: ns.shop,
  };
  let interrupts = 0;
  process.on("SIGINT", () => {
    interrupts++;
    const down = ctx.downSite;
    if (interrupts > 1) {
      if (down !== undefined) say(`the ${down} site stays down; \`${siteCommand(ctx, "up", down)}\` brings it back`);
      process.exit(130);
    }
    const site = down === undefined ? "" : `, bringing the ${down} site back up first`;
    say(`\ninterrupted: stopping after the current request${site} (Ctrl-C again to quit at once)`);
    abort.abort();
  });
  const password = randomBytes(12).toString("hex");
  const started = performance.now();
  try {
    await demo(ctx, password);
  } catch (error) {
    await restoreSite(ctx);
    if (error instanceof Interrupted || abort.signal.aborted) {
      say(
        `the cluster keeps running; \`npx ksr local down --dir ${options.dir}\` stops it, \`npm run demo\` starts over`,
      );
      process.exitCode = 130;
      return;
    }
    say(`✘ ${error instanceof Error ? error.message : String(error)}`);
    process.exitCode = 1;
  } finally {
    if (ctx.rows.length > 0) say(`\n${table(ctx.rows, ctx.notes)}`);
    say(
      `\nsteps: ${ctx.timings.map(([name, s]) => `${name.split(":")[0]} ${s.toFixed(1)} s`).join(", ")}; wall time ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );
    const client = ctx.client as KubeClient | undefined;
    if (options.keep === true) say(`--keep: the shop runs in namespace ${ctx.shopAt}; KUBECONFIG=${ctx.kubeconfig}`);
    else if (client !== undefined && !abort.signal.aborted && process.exitCode === undefined) {
      await removePreviousShop(ctx).catch(() => false);
      say("removed the shop; the cluster and the operator keep running (`npx ksr local down` stops the cluster)");
    }
    client?.close();
  }
}

await main();
