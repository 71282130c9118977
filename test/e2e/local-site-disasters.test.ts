// Losing a site of the shared `ksr local` cluster through the CLI, as a user
// would: `site down --mode power` leaves the node NotReady, its pods' processes
// gone and its volumes' data on disk, and `site up` starts the still-bound pods
// afresh; `site down --mode network` cuts the site's pods off while they keep
// running, and `site up` reconnects them.
import { strict as assert } from "node:assert";
import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { CoreV1Api, type V1Pod } from "@kubernetes/client-node";
import { localNodes, nodeLayout, siteLabel } from "../../src/local/node/layout.js";
import { readContainerLog } from "../../src/local/node/logs.js";
import { isRunning, type ProcessRecord } from "../../src/local/processes.js";
import { useCluster } from "../fixture/cluster.js";
import { idle, podCondition, shellContainer, waitFor, waitForDefaultServiceAccount } from "./local-node-helpers.js";
import { prober, proberSettlesOn, webPod } from "./network-probers.js";

const ksr = fileURLToPath(new URL("../../../bin/ksr.js", import.meta.url));
const run = promisify(execFile);

describe("ksr local site disasters (e2e)", function () {
  this.timeout(240_000);
  const cluster = useCluster("site");
  const core = () => cluster.kubeConfig.makeApiClient(CoreV1Api);
  const ns = () => cluster.namespace;
  const site = (...args: string[]) => run("node", [ksr, "local", "site", ...args, "--dir", cluster.state.dir]);
  const recovery = localNodes.find((node) => node.site === "recovery")?.name ?? "";

  /** The recorded processes of the pod's containers (DIR/node/processes/UID-CONTAINER-N.json). */
  const containerProcesses = (pod: V1Pod): ProcessRecord[] => {
    const dir = nodeLayout(cluster.state.dir).processes;
    return readdirSync(dir)
      .filter((file) => file.startsWith(pod.metadata?.uid ?? "?"))
      .map((file) => JSON.parse(readFileSync(join(dir, file), "utf8")) as ProcessRecord);
  };
  const readPod = (name: string) => core().readNamespacedPod({ name, namespace: ns() });
  const running = (name: string) =>
    waitFor(`${name} running`, async () => {
      const pod = await readPod(name);
      return podCondition(pod, "Ready") === "True" && containerProcesses(pod).some(isRunning) ? pod : undefined;
    });
  const nodeReady = (status: "True" | "Unknown") =>
    waitFor(
      `${recovery} Ready=${status}`,
      async () => {
        const node = await core().readNode({ name: recovery });
        return node.status?.conditions?.find((c) => c.type === "Ready")?.status === status ? true : undefined;
      },
      150_000,
    );

  before(() => waitForDefaultServiceAccount(core(), ns()));
  after(async () => {
    // Whatever happened, the next suite gets both sites back.
    await site("up", "recovery").catch(() => undefined);
  });

  it("power: the node goes NotReady, its pods' processes are gone, the claim's data stays, and up starts the pod afresh", async () => {
    await core().createNamespacedPersistentVolumeClaim({
      namespace: ns(),
      body: {
        metadata: { name: "data" },
        spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "16Mi" } } },
      },
    });
    await core().createNamespacedPod({
      namespace: ns(),
      body: {
        metadata: { name: "writer" },
        spec: {
          nodeSelector: { [siteLabel]: "recovery" },
          containers: [
            shellContainer("main", `cat /data/file 2>/dev/null; echo "run $(date +%s%N)" >> /data/file; ${idle}`, {
              volumeMounts: [{ name: "data", mountPath: "/data" }],
            }),
          ],
          volumes: [{ name: "data", persistentVolumeClaim: { claimName: "data" } }],
        },
      },
    });
    const before = await running("writer");
    const processes = containerProcesses(before).filter(isRunning);
    const claim = await core().readNamespacedPersistentVolumeClaim({ name: "data", namespace: ns() });
    const dataFile = join(nodeLayout(cluster.state.dir).volumes, recovery, claim.spec?.volumeName ?? "", "file");
    await waitFor("the first run's line on disk", () =>
      Promise.resolve(readFileSync(dataFile, "utf8").startsWith("run ") ? true : undefined),
    );

    await site("down", "recovery", "--mode", "power");
    assert.deepEqual(
      processes.filter(isRunning).map((p) => p.pid),
      [],
      "every process of the pod died with the site",
    );
    const written = readFileSync(dataFile, "utf8");
    assert.match(written, /^run \d+\n$/);
    await nodeReady("Unknown");
    const during = await readPod("writer");
    assert.equal(during.metadata?.uid, before.metadata?.uid, "the API object stays as it was");
    // status exits 1 while a component is unhealthy; its report is what matters here.
    const { stdout } = await run("node", [ksr, "local", "status", "--dir", cluster.state.dir]).catch(
      (error: unknown) => error as { stdout: string },
    );
    assert.match(stdout, /site recovery\s+node ksr-recovery\s+down \(power\)/);

    await site("up", "recovery");
    await nodeReady("True");
    const after = await running("writer");
    assert.equal(after.metadata?.uid, before.metadata?.uid);
    // A cold start is a container restart, as the kubelet counts it after a reboot.
    const restarted = after.status?.containerStatuses?.[0];
    assert.deepEqual(
      [restarted?.restartCount, restarted?.lastState?.terminated?.exitCode, restarted?.lastState?.terminated?.reason],
      [1, 255, "Unknown"],
    );
    assert.ok(
      containerProcesses(after)
        .filter(isRunning)
        .every((p) => !processes.some((old) => old.pid === p.pid)),
    );
    // The restarted container read what the first one wrote before the power loss.
    await waitFor("the new run printed the old data", () =>
      Promise.resolve(
        readContainerLog({ dir: cluster.state.dir, namespace: ns(), pod: "writer" }).includes(written.trim())
          ? true
          : undefined,
      ),
    );
  });

  it("network: the site's pods keep running but reach nothing outside it, and up reconnects them", async () => {
    await core().createNamespacedPod({ namespace: ns(), body: webPod("far", "recovery") });
    await core().createNamespacedPod({ namespace: ns(), body: webPod("near", "primary") });
    const far = await running("far");
    const near = await running("near");
    const url = (pod: V1Pod) => `http://${pod.status?.podIP}:8080/hostname`;
    await core().createNamespacedPod({
      namespace: ns(),
      body: prober(
        "cut-off",
        "recovery",
        {},
        { near: url(near), far: url(far), dns: "dns:kubernetes.default.svc.cluster.local." },
      ),
    });
    await core().createNamespacedPod({
      namespace: ns(),
      body: prober("outside", "primary", {}, { near: url(near), far: url(far) }),
    });
    const dir = cluster.state.dir;
    await proberSettlesOn(dir, ns(), "cut-off", { near: "ok", far: "ok", dns: "ok" });
    const farProcesses = containerProcesses(far).filter(isRunning);

    await site("down", "recovery", "--mode", "network");
    // The site's own CoreDNS pod answers from what it read before the cut, as a partitioned replica does.
    await proberSettlesOn(dir, ns(), "cut-off", { near: "blocked", far: "ok", dns: "ok" });
    await proberSettlesOn(dir, ns(), "outside", { near: "ok", far: "blocked" });
    assert.deepEqual(
      farProcesses.map(isRunning),
      farProcesses.map(() => true),
      "the cut-off pod keeps running",
    );

    await site("up", "recovery");
    await proberSettlesOn(dir, ns(), "cut-off", { near: "ok", far: "ok", dns: "ok" });
    await proberSettlesOn(dir, ns(), "outside", { near: "ok", far: "ok" });
    assert.deepEqual(
      farProcesses.map(isRunning),
      farProcesses.map(() => true),
      "the same process serves again",
    );
  });
});
