// `npm run demo`: the whole ASR cycle on `ksr local`, as a user would type it, one step after the
// other with what it does and how long it took: the cluster (started or reused), the operator,
// the shop (PostgreSQL written to by an API under load, a web tier), protection with live
// progress, a drill whose database is checked against the point from inside the drill namespace,
// a planned failover with its manual approval and commit, reprotect, failback (a planned run
// back, approved and committed) and reprotect again; a closing table of each operation.
// Re-runnable (a previous demo's shop is removed first); Ctrl-C stops between requests and
// leaves the cluster for `ksr local down`; --keep leaves everything running.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Command, InvalidArgumentError } from "commander";
import { KubeConfig } from "@kubernetes/client-node";
import { failoverRuns, protectedMachines, recoveryPlans, replicationPolicies, type FailoverRun } from "../api/types.js";
import { defaultNamespace, leaseName, operatorHealthPort, operatorName } from "../install/manifests.js";
import { defaultClusterDir, readClusterState } from "../local/cluster.js";
import {
  deployments,
  KubeClient,
  leases,
  namespaces,
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
  planName,
  protectionManifests,
  shopNamespaces,
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
  client: KubeClient;
  signal: AbortSignal;
  rows: Row[];
  timings: [string, number][];
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
 * SELECT count(*) FROM orders, run by `kubectl exec` in the database's own pod: a drill's
 * namespace is isolated by a NetworkPolicy, so nothing outside it may connect to the database.
 */
async function orderCount(ctx: Context, namespace: string): Promise<number> {
  const pod = await databasePod(ctx, namespace);
  if (pod === undefined) throw new Error(`no ready database pod in namespace ${namespace}`);
  const kubectl = join(readClusterState(ctx.dir)?.binDir ?? "", "kubectl");
  const query = 'PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 -U postgres -tAc "SELECT count(*) FROM orders"';
  const out = await run(
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
  const count = Number(out.trim());
  if (out.trim() === "" || !Number.isInteger(count))
    throw new Error(`psql in ${namespace}/${pod.metadata.name} answered ${JSON.stringify(out.trim())}`);
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

/** Bytes the recovery site made durable so far for the shop: the leading operator's ksr_replicated_bytes_total. */
async function replicatedBytes(ctx: Context): Promise<number> {
  const holder = (await ctx.client.get(leases, leaseName, defaultNamespace))?.spec?.holderIdentity ?? "";
  const { items } = await ctx.client.list(pods, {
    namespace: defaultNamespace,
    labelSelector: `app.kubernetes.io/name=${operatorName}`,
  });
  const leader = items.find((pod) => holder.startsWith(`${pod.metadata.name}_`));
  if (leader?.status?.podIP === undefined) return Number.NaN;
  const text = await fetch(`http://${leader.status.podIP}:${operatorHealthPort}/metrics`, { signal: ctx.signal })
    .then((response) => response.text())
    .catch(() => undefined);
  if (text === undefined) return Number.NaN;
  let total = 0;
  for (const match of text.matchAll(/^ksr_replicated_bytes_total\{([^}]*)\} (\S+)$/gm))
    if ((match[1] ?? "").includes(`namespace="${ctx.ns.shop}"`)) total += Number(match[2]);
  return total;
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
  const bytesBefore = await replicatedBytes(ctx);
  const done = await body();
  const bytes = (await replicatedBytes(ctx)) - bytesBefore;
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
  await waitRun(ctx, name, ["WaitingForApproval"], 10 * 60_000);
  say("    the plan asks for a person's approval (database/confirm); approving as the demo");
  await kubectlDr(ctx, ["approve", name, "database/confirm", "--comment", "npm run demo"]);
  const done = await waitRun(ctx, name, ["Succeeded"], 15 * 60_000);
  const recovered = await settledOrderCount(ctx, to, `the recovered database in ${to} answering`);
  if (recovered !== count)
    throw new Error(`the database recovered into ${to} has ${recovered} orders; ${from} had ${count}`);
  say(`    the shop runs in ${to} on the ${site} site with all ${recovered} orders; committing`);
  await kubectlDr(ctx, ["commit", name]);
  await waitRun(ctx, name, ["Committed"], 5 * 60_000);
  await startLoad(ctx, to, site);
  return done;
}

async function reprotect(ctx: Context, kind: string): Promise<FailoverRun> {
  const name = runName(kind);
  await kubectlDr(ctx, ["reprotect", planName, "--name", name]);
  const done = await waitRun(ctx, name, ["Succeeded"], 15 * 60_000);
  await waitProtected(ctx);
  return done;
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
}

function table(rows: Row[]): string {
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
    .option("--keep", "leave the shop and the operator running at the end (explore with kubectl)")
    .parse();
  const options = program.opts<{ dir: string; namespace: string; small?: boolean; keep?: boolean }>();
  const abort = new AbortController();
  let interrupts = 0;
  process.on("SIGINT", () => {
    interrupts++;
    if (interrupts > 1) process.exit(130);
    say("\ninterrupted: stopping after the current request (Ctrl-C again to quit at once)");
    abort.abort();
  });
  const ctx: Context = {
    dir: options.dir,
    kubeconfig: join(options.dir, "kubeconfig"),
    ns: shopNamespaces(options.namespace),
    ordersFirst: options.small === true ? 20 : 100,
    warmUp: options.small === true ? "2s" : "30s",
    client: undefined as unknown as KubeClient,
    signal: abort.signal,
    rows: [],
    timings: [],
  };
  const password = randomBytes(12).toString("hex");
  const started = performance.now();
  try {
    await demo(ctx, password);
  } catch (error) {
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
    if (ctx.rows.length > 0) say(`\n${table(ctx.rows)}`);
    say(
      `\nsteps: ${ctx.timings.map(([name, s]) => `${name.split(":")[0]} ${s.toFixed(1)} s`).join(", ")}; wall time ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );
    const client = ctx.client as KubeClient | undefined;
    if (options.keep === true) say(`--keep: the shop runs in namespace ${ctx.ns.shop}; KUBECONFIG=${ctx.kubeconfig}`);
    else if (client !== undefined && !abort.signal.aborted && process.exitCode === undefined) {
      await removePreviousShop(ctx).catch(() => false);
      say("removed the shop; the cluster and the operator keep running (`npx ksr local down` stops the cluster)");
    }
    client?.close();
  }
}

await main();
