// Controller runtime figures on a dedicated `ksr local` control plane:
//  1. reconcile throughput of the sample controller (test/fixture/sample-controller.ts),
//     against a baseline that makes the same API writes directly, with the same parallelism;
//  2. memory of an informer caching 5,000 ConfigMaps, against holding the same
//     objects as a plain list response.
// Usage: npm run bench -- runtime [--objects 500] [--cached 5000] [--workers 2,8]
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { parseArgs } from "node:util";
import { resolveControlPlaneBinaries } from "../src/local/binaries.js";
import { down, up } from "../src/local/cluster.js";
import { kubeConfigFor } from "../test/fixture/cluster.js";
import {
  addFinalizer,
  apiListWatch,
  configMaps,
  findCondition,
  Informer,
  KubeClient,
  namespaces,
  StatusWriter,
  systemClock,
  type ConfigMap,
} from "../src/runtime/index.js";
import { addMirrorController, copyName, mirrors, type Mirror } from "../test/fixture/sample-controller.js";
import { installMirrorCrd, mirror, testManager } from "../test/fixture/runtime.js";

setFlagsFromString("--expose-gc");
const collectGarbage = runInNewContext("gc") as () => void;

async function inParallel<T>(items: T[], parallelism: number, work: (item: T) => Promise<unknown>): Promise<void> {
  const pending = [...items].reverse();
  const lanes = Array.from({ length: parallelism }, async () => {
    for (let item = pending.pop(); item !== undefined; item = pending.pop()) await work(item);
  });
  await Promise.all(lanes);
}

async function freshNamespace(client: KubeClient, name: string): Promise<string> {
  await client.create(namespaces, { metadata: { name } });
  return name;
}

/** Seconds for the sample controller to bring `count` pre-created Mirrors to Ready. */
async function controllerRun(
  client: KubeClient,
  kubeConfig: ReturnType<typeof kubeConfigFor>,
  count: number,
  workers: number,
) {
  const namespace = await freshNamespace(client, `bench-ctl-${workers}-${Date.now()}`);
  const names = Array.from({ length: count }, (_, i) => `m${i}`);
  await inParallel(names, 16, (name) => client.create(mirrors, mirror(namespace, name, { a: "1", b: "2" })));
  const manager = testManager(kubeConfig, { client: { maxSockets: Math.max(8, workers * 2) } });
  addMirrorController(manager, { concurrency: workers, namespace });
  const cache = manager.cache.informer(mirrors, { namespace });
  const started = performance.now();
  await manager.start();
  const ready = () =>
    cache.list(namespace).filter((m: Mirror) => findCondition(m.status?.conditions, "Ready")?.status === "True").length;
  while (ready() < count) await new Promise((resolve) => setTimeout(resolve, 20));
  const seconds = (performance.now() - started) / 1000;
  const reconciles = await manager.metrics.reconcileTotal.get();
  const total = (result: string) =>
    reconciles.values.filter((v) => v.labels.result === result).reduce((sum, v) => sum + v.value, 0);
  await manager.stop();
  return { seconds, reconciles: total("success") + total("error"), errors: total("error") };
}

/** Seconds for the same writes per object (finalizer patch, ConfigMap create, status update), made directly. */
async function baselineRun(client: KubeClient, count: number, parallelism: number) {
  const namespace = await freshNamespace(client, `bench-raw-${parallelism}-${Date.now()}`);
  const created: Mirror[] = [];
  await inParallel(
    Array.from({ length: count }, (_, i) => `m${i}`),
    16,
    async (name) => {
      created.push(await client.create(mirrors, mirror(namespace, name, { a: "1", b: "2" })));
    },
  );
  const started = performance.now();
  await inParallel(created, parallelism, async (object) => {
    const { object: withFinalizer = object } = await addFinalizer(client, mirrors, object, "bench.ksr.io/f");
    const copy: ConfigMap = { metadata: { name: copyName(object.metadata.name), namespace }, data: object.spec.data };
    await client.create(configMaps, copy);
    const status = new StatusWriter(client, mirrors, withFinalizer, systemClock);
    status.set({ copiedKeys: 2 });
    status.condition({ type: "Ready", status: "True", reason: "CopyUpToDate" });
    await status.write();
  });
  return (performance.now() - started) / 1000;
}

function heap(): { heapUsed: number; rss: number } {
  collectGarbage();
  collectGarbage();
  const { heapUsed, rss } = process.memoryUsage();
  return { heapUsed, rss };
}

const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

async function memoryRun(client: KubeClient, count: number) {
  const namespace = await freshNamespace(client, `bench-mem-${Date.now()}`);
  const payload = { region: "eu-west", tier: "gold", owner: "team-a", note: "x".repeat(120) };
  await inParallel(
    Array.from({ length: count }, (_, i) => `cm-${i}`),
    32,
    (name) =>
      client.create(configMaps, {
        metadata: { name, namespace, labels: { app: "bench", shard: name.slice(-1) } },
        data: payload,
      }),
  );

  const scope = { namespace, labelSelector: "app=bench" };
  const informer = await heldBy(
    async () => {
      const cache = new Informer({
        name: "bench",
        listWatch: apiListWatch(client, configMaps, scope),
        indexers: { shard: (object) => [object.metadata.labels?.shard ?? ""] },
      });
      cache.start();
      await cache.waitForSync();
      return cache;
    },
    (cache) => cache.size,
  );
  await informer.value.stop();
  const list = await heldBy(
    () => client.list(configMaps, scope),
    (result) => result.items.length,
  );
  if (informer.count !== count || list.count !== count) {
    throw new Error(`cached ${informer.count} and listed ${list.count} ConfigMaps, expected ${count}`);
  }
  return { informer, list };
}

/** Heap and RSS growth while the value load() returns is alive. */
async function heldBy<T>(load: () => Promise<T>, count: (value: T) => number) {
  const before = heap();
  const value = await load();
  const after = heap();
  return {
    value,
    count: count(value),
    heap: after.heapUsed - before.heapUsed,
    rss: after.rss - before.rss,
    total: after,
  };
}

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      objects: { type: "string", default: "500" },
      cached: { type: "string", default: "5000" },
      workers: { type: "string", default: "2,8" },
    },
  });
  const objects = Number(values.objects);
  const cached = Number(values.cached);
  const workerCounts = values.workers.split(",").map(Number);
  if (![objects, cached, ...workerCounts].every((n) => Number.isInteger(n) && n > 0)) {
    throw new Error("--objects, --cached and --workers take positive integers (--workers a comma-separated list)");
  }
  const dir = mkdtempSync(join(tmpdir(), "ksr-bench-runtime-"));
  process.stdout.write(`starting a dedicated control plane in ${dir}\n`);
  const state = await up({ dir, binDir: await resolveControlPlaneBinaries() });
  try {
    const kubeConfig = kubeConfigFor(state);
    await installMirrorCrd(kubeConfig);
    const client = new KubeClient(kubeConfig, { maxSockets: 32 });

    process.stdout.write(`\nreconcile throughput, ${objects} Mirrors (3 writes each)\n`);
    for (const workers of workerCounts) {
      const controller = await controllerRun(client, kubeConfig, objects, workers);
      const baseline = await baselineRun(client, objects, workers);
      process.stdout.write(
        `  workers=${workers}: sample controller ${(objects / controller.seconds).toFixed(0)} objects/s ` +
          `(${controller.seconds.toFixed(2)} s, ${controller.reconciles} reconciles, ${controller.errors} failed and retried); ` +
          `direct writes ${(objects / baseline).toFixed(0)} objects/s; ratio controller/direct ${(baseline / controller.seconds).toFixed(2)}\n`,
      );
    }

    process.stdout.write(`\ninformer memory, ${cached} ConfigMaps (~300 B of data each)\n`);
    const { informer, list } = await memoryRun(client, cached);
    process.stdout.write(
      `  informer (frozen objects + namespace and label indexes): heap +${mib(informer.heap)} ` +
        `(${(informer.heap / cached / 1024).toFixed(2)} KiB/object), RSS +${mib(informer.rss)}\n` +
        `  baseline, the plain list response held: heap +${mib(list.heap)}, RSS +${mib(list.rss)}\n` +
        `  ratio informer/plain list (heap) ${(informer.heap / list.heap).toFixed(2)}\n` +
        `  process totals with the informer synced: heapUsed ${mib(informer.total.heapUsed)}, RSS ${mib(informer.total.rss)}\n`,
    );
    client.close();
  } finally {
    await down({ dir });
    rmSync(dir, { recursive: true, force: true });
  }
}
