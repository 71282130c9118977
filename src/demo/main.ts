// `npm run demo`: the whole ASR cycle on `ksr local`, as a user would type it, one step after the
// other with what it does and how long it took: the cluster (started or reused), the operator,
// the shop (PostgreSQL written to by an API under load, a web tier), protection with live
// progress, a drill whose database is checked against the point, a planned failover with its
// manual approval and commit, then reprotect and failback; a closing table of each operation.
// Re-runnable (a previous demo's shop is removed first); Ctrl-C stops between requests and
// leaves the cluster for `ksr local down`; --keep leaves everything running.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Command } from "commander";
import { KubeConfig } from "@kubernetes/client-node";
import { failoverRuns, protectedMachines, recoveryPlans, replicationPolicies, type FailoverRun } from "../api/types.js";
import { defaultNamespace, leaseName, operatorHealthPort, operatorName } from "../install/manifests.js";
import { defaultClusterDir } from "../local/cluster.js";
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
  drillNamespace,
  machineNames,
  planName,
  protectionManifests,
  recoveryNamespace,
  shopNamespace,
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

interface Row {
  operation: string;
  rpoBefore: string;
  rto: string;
  dataLoss: string;
  bytes: string;
  took: string;
}

interface Context {
  dir: string;
  kubeconfig: string;
  client: KubeClient;
  signal: AbortSignal;
  rows: Row[];
  timings: [string, number][];
}

const tty = process.stdout.isTTY;
const say = (line: string) => process.stdout.write(`${line}\n`);
/** A progress line: rewritten in place on a terminal, one plain line per change otherwise. */
function progress(): { update(line: string): void; done(): void } {
  let last = "";
  return {
    update(line: string) {
      if (line === last) return;
      last = line;
      if (tty) process.stdout.write(`\r\x1b[2K    ${line}`);
      else say(`    ${line}`);
    },
    done() {
      if (tty && last !== "") process.stdout.write("\n");
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
    [join(packageRoot, "bin", "kubectl-dr.js"), "--kubeconfig", ctx.kubeconfig, "-n", shopNamespace, ...args],
    ctx.signal,
    {
      quiet,
    },
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

/** SELECT count(*) FROM orders on the PostgreSQL pod given, with the host's psql. */
async function orderCount(ctx: Context, pod: Pod, password: string): Promise<number> {
  const ip = pod.status?.podIP;
  if (ip === undefined) throw new Error(`pod ${pod.metadata.name} has no IP yet`);
  const out = await run("psql", ["-h", ip, "-U", "postgres", "-tAc", "SELECT count(*) FROM orders"], ctx.signal, {
    quiet: true,
    env: { ...process.env, PGPASSWORD: password, PGCONNECT_TIMEOUT: "5" },
  });
  return Number(out.trim());
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

async function apply(ctx: Context, objects: (KubeObject & Record<string, unknown>)[]): Promise<void> {
  for (const object of objects) {
    const type = typesByKind[object.kind ?? ""];
    if (type === undefined) throw new Error(`the demo cannot apply a ${object.kind ?? "kindless object"}`);
    await ctx.client.apply(
      type,
      { ...object, metadata: { ...object.metadata, namespace: shopNamespace } },
      { fieldManager, force: true },
    );
  }
}

/** A previous demo's shop: runs, machines and plan go first (the operator clears their finalizers), then the namespaces. */
async function removePreviousShop(ctx: Context): Promise<boolean> {
  if ((await ctx.client.get(namespaces, shopNamespace)) === undefined) return false;
  for (const type of [
    failoverRuns,
    protectedMachines,
    recoveryPlans,
    replicationPolicies,
  ] as ResourceType<KubeObject>[]) {
    const { items } = await ctx.client.list(type, { namespace: shopNamespace });
    for (const item of items) await ctx.client.delete(type, { name: item.metadata.name, namespace: shopNamespace });
    await until(
      ctx,
      `the previous demo's ${type.plural} gone`,
      async () => ((await ctx.client.list(type, { namespace: shopNamespace })).items.length === 0 ? true : undefined),
      5 * 60_000,
    );
  }
  const shopNamespaces = [shopNamespace, recoveryNamespace, drillNamespace];
  for (const name of shopNamespaces) await ctx.client.delete(namespaces, { name });
  await until(
    ctx,
    "the previous demo's namespaces gone",
    async () => {
      for (const name of shopNamespaces) if ((await ctx.client.get(namespaces, name)) !== undefined) return undefined;
      return true;
    },
    5 * 60_000,
  );
  return true;
}

const machine = (ctx: Context, name: string) => ctx.client.get(protectedMachines, name, shopNamespace);
const rpoOf = async (ctx: Context) => (await machine(ctx, "shop-db"))?.status?.rpo ?? "—";
/** Bytes the recovery site made durable so far for the shop: the leading operator's ksr_replicated_bytes_total. */
async function replicatedBytes(ctx: Context): Promise<number> {
  const holder = (await ctx.client.get(leases, leaseName, defaultNamespace))?.spec?.holderIdentity ?? "";
  const { items } = await ctx.client.list(pods, {
    namespace: defaultNamespace,
    labelSelector: `app.kubernetes.io/name=${operatorName}`,
  });
  const leader = items.find((pod) => holder.startsWith(`${pod.metadata.name}_`));
  if (leader?.status?.podIP === undefined) return Number.NaN;
  const response = await fetch(`http://${leader.status.podIP}:${operatorHealthPort}/metrics`, { signal: ctx.signal });
  const text = await response.text();
  let total = 0;
  for (const match of text.matchAll(/^ksr_replicated_bytes_total\{([^}]*)\} (\S+)$/gm))
    if ((match[1] ?? "").includes(`namespace="${shopNamespace}"`)) total += Number(match[2]);
  return total;
}

async function waitRun(ctx: Context, name: string, phases: string[], timeoutMs: number): Promise<FailoverRun> {
  const line = progress();
  try {
    return await until(
      ctx,
      `FailoverRun ${name} in ${phases.join(" or ")}`,
      async () => {
        const found = await ctx.client.get(failoverRuns, name, shopNamespace);
        const phase = found?.status?.phase ?? "Pending";
        const current = found?.status?.steps?.find((s) => s.phase === "Running" || s.phase === "WaitingForApproval");
        line.update(`${name}: ${phase}${current === undefined ? "" : ` — ${current.name} ${current.phase}`}`);
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

function row(operation: string, rpoBefore: string, run: FailoverRun | undefined, bytes: number, took: number): Row {
  return {
    operation,
    rpoBefore,
    rto: run?.status?.rto ?? "—",
    dataLoss: run?.status?.dataLossWindow ?? "—",
    bytes: Number.isNaN(bytes) || bytes < 0 ? "—" : `${(bytes / 2 ** 20).toFixed(1)} MiB`,
    took: `${took.toFixed(1)} s`,
  };
}

async function demo(ctx: Context, password: string): Promise<void> {
  await step(ctx, "cluster: reuse a running `ksr local`, or start one", async () => {
    const running = await ksr(ctx, ["local", "status", "--dir", ctx.dir], true).then(
      () => true,
      () => false,
    );
    if (running) say(`    reusing the cluster running in ${ctx.dir}`);
    else await ksr(ctx, ["local", "up", "--dir", ctx.dir]);
  });
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(ctx.kubeconfig);
  ctx.client = new KubeClient(kubeConfig);

  await step(ctx, "operator: ksr install --wait", async () => {
    await ksr(ctx, ["install", "--kubeconfig", ctx.kubeconfig, "--wait"]);
  });

  await step(ctx, "shop: PostgreSQL, an API under a load generator, a web tier", async () => {
    if (await removePreviousShop(ctx)) say("    removed the previous demo's shop");
    // The operator copies no Secret: the database's password waits where the shop recovers
    // (the recovery namespace, and the drill's), as a user provides it there.
    for (const name of [shopNamespace, recoveryNamespace, drillNamespace]) {
      await ctx.client.create(namespaces, { metadata: { name } });
      await ctx.client.create(secrets, { metadata: { name: "shop-db", namespace: name }, stringData: { password } });
    }
    await ctx.client.create(secrets, {
      metadata: { name: "shop-dr-key", namespace: shopNamespace },
      data: { key: randomBytes(32).toString("base64") },
    });
    await apply(ctx, applicationManifests());
    const line = progress();
    const count = await until(
      ctx,
      "orders in the database",
      async () => {
        const pod = await databasePod(ctx, shopNamespace);
        const orders = pod === undefined ? 0 : await orderCount(ctx, pod, password).catch(() => 0);
        line.update(pod === undefined ? "waiting for PostgreSQL" : `${orders} orders`);
        return orders > 20 ? orders : undefined;
      },
      5 * 60_000,
    );
    line.done();
    say(`    ${count} orders written so far, and counting`);
  });

  await step(ctx, "protect: the policy, three ProtectedMachines and the recovery plan", async () => {
    const started = performance.now();
    await apply(ctx, protectionManifests());
    const line = progress();
    await until(
      ctx,
      "every machine Protected",
      async () => {
        const found = await Promise.all(machineNames.map((name) => machine(ctx, name)));
        line.update(
          found
            .map(
              (m, i) =>
                `${machineNames[i]} ${m?.status?.phase ?? "—"}${m?.status?.phase === "InitialReplication" ? ` ${m.status.initialReplication?.progressPercent ?? 0}%` : ""}`,
            )
            .join(", "),
        );
        return found.every((m) => m?.status?.phase === "Protected") ? true : undefined;
      },
      15 * 60_000,
    );
    line.done();
    ctx.rows.push(
      row(
        "protect (initial replication)",
        "—",
        undefined,
        await replicatedBytes(ctx),
        (performance.now() - started) / 1000,
      ),
    );
  });

  await step(ctx, "drill: kubectl dr test, check the drilled database against the point, clean up", async () => {
    const started = performance.now();
    const bytesBefore = await replicatedBytes(ctx);
    // Hold the load so the point has a known row count: every order is durable before the point's time.
    await ctx.client.patch(
      deployments,
      { name: "shop-load", namespace: shopNamespace },
      { spec: { replicas: 0 } },
      "merge",
    );
    const source = await databasePod(ctx, shopNamespace);
    if (source === undefined) throw new Error("the shop's database is not ready");
    await until(
      ctx,
      "the load generator stopped",
      async () =>
        (await ctx.client.list(pods, { namespace: shopNamespace, labelSelector: "app.kubernetes.io/name=shop-load" }))
          .items.length === 0
          ? true
          : undefined,
      60_000,
    );
    const count = await orderCount(ctx, source, password);
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
    const rpoBefore = await rpoOf(ctx);
    const name = `demo-drill-${Date.now().toString(36)}`;
    const time = new Date().toISOString();
    await kubectlDr(ctx, ["test", planName, "--name", name, "--drill-namespace", drillNamespace, "--time", time]);
    const drill = await waitRun(ctx, name, ["Succeeded"], 15 * 60_000);
    const drilled = await until(ctx, "the drilled database ready", () => databasePod(ctx, drillNamespace), 5 * 60_000);
    const drilledCount = await until(
      ctx,
      "the drilled database answering",
      () => orderCount(ctx, drilled, password).catch(() => undefined),
      2 * 60_000,
    );
    if (drilledCount !== count)
      throw new Error(`the drilled database has ${drilledCount} orders; the point had ${count}`);
    say(`    the drilled database in ${drillNamespace} has ${drilledCount} orders, as at the point`);
    await ctx.client.patch(
      deployments,
      { name: "shop-load", namespace: shopNamespace },
      { spec: { replicas: 1 } },
      "merge",
    );
    await kubectlDr(ctx, ["cleanup", name]);
    await waitRun(ctx, name, ["CleanedUp"], 5 * 60_000);
    ctx.rows.push(
      row(
        "drill (test failover)",
        rpoBefore,
        drill,
        (await replicatedBytes(ctx)) - bytesBefore,
        (performance.now() - started) / 1000,
      ),
    );
  });

  await step(ctx, "planned failover: kubectl dr failover --planned, approve, commit", async () => {
    const started = performance.now();
    const bytesBefore = await replicatedBytes(ctx);
    const rpoBefore = await rpoOf(ctx);
    const name = `demo-failover-${Date.now().toString(36)}`;
    await kubectlDr(ctx, ["failover", planName, "--planned", "--name", name]);
    await waitRun(ctx, name, ["WaitingForApproval"], 10 * 60_000);
    say("    the plan asks for a person's approval (database/confirm); approving as the demo");
    await kubectlDr(ctx, ["approve", name, "database/confirm", "--comment", "npm run demo"]);
    const failover = await waitRun(ctx, name, ["Succeeded"], 15 * 60_000);
    const recovered = await until(
      ctx,
      "the recovered database ready",
      () => databasePod(ctx, recoveryNamespace),
      5 * 60_000,
    );
    const count = await orderCount(ctx, recovered, password);
    say(`    the shop runs in ${recoveryNamespace}, pinned to the recovery site: ${count} orders`);
    await kubectlDr(ctx, ["commit", name]);
    await waitRun(ctx, name, ["Committed"], 5 * 60_000);
    ctx.rows.push(
      row(
        "planned failover + commit",
        rpoBefore,
        failover,
        (await replicatedBytes(ctx)) - bytesBefore,
        (performance.now() - started) / 1000,
      ),
    );
  });

  await step(ctx, "reprotect and failback", async () => {
    const help = await kubectlDr(ctx, ["--help"], true);
    if (!/\breprotect\b/.test(help))
      throw new Error(
        "this build's kubectl dr has no reprotect command yet (issue #15): reprotect and failback are pending",
      );
    const started = performance.now();
    const name = `demo-reprotect-${Date.now().toString(36)}`;
    await kubectlDr(ctx, ["reprotect", planName, "--name", name]);
    const reprotect = await waitRun(ctx, name, ["Succeeded"], 15 * 60_000);
    ctx.rows.push(row("reprotect", "—", reprotect, Number.NaN, (performance.now() - started) / 1000));
  });
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
  const line = (r: Row) => keys.map((key, i) => r[key].padEnd(widths[i] ?? 0)).join("  ");
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

async function main(): Promise<void> {
  const program = new Command("demo")
    .description("the ASR cycle on ksr local: protect the shop, drill it, fail it over and back")
    .option("--dir <dir>", "the ksr local cluster to start or reuse", defaultClusterDir)
    .option("--keep", "leave the shop and the operator running at the end (explore with kubectl)")
    .parse();
  const options = program.opts<{ dir: string; keep?: boolean }>();
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
      `\nsteps: ${ctx.timings.map(([name, s]) => `${name.split(":")[0]} ${s.toFixed(1)} s`).join(", ")}; total ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );
    const client = ctx.client as KubeClient | undefined;
    if (options.keep === true) say(`--keep: the shop runs in namespace ${shopNamespace}; KUBECONFIG=${ctx.kubeconfig}`);
    else if (client !== undefined && !abort.signal.aborted && process.exitCode === undefined) {
      await removePreviousShop(ctx).catch(() => false);
      say("removed the shop; the cluster and the operator keep running (`npx ksr local down` stops the cluster)");
    }
    client?.close();
  }
}

await main();
