// The process-backed local node against the shared `ksr local` cluster: the
// real scheduler places pods on the two site nodes, the node agent runs them
// as processes, and the real controllers (Deployment, StatefulSet, Job, PV
// binder, EndpointSlice) react to the status it reports.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { strict as assert } from "node:assert";
import {
  AppsV1Api,
  BatchV1Api,
  CoordinationV1Api,
  CoreV1Api,
  DiscoveryV1Api,
  type V1Pod,
} from "@kubernetes/client-node";
import { findPostgresBinDir } from "../../src/local/node/images.js";
import { localNodes, nodeLayout, siteLabel } from "../../src/local/node/layout.js";
import { readContainerLog } from "../../src/local/node/logs.js";
import { useCluster } from "../fixture/cluster.js";
import {
  httpText,
  idle,
  isPodAddress,
  podCondition,
  podsWithLabel,
  serviceEndpoints,
  shellContainer,
  summarize,
  waitFor,
  waitForDefaultServiceAccount,
} from "./local-node-helpers.js";

describe("local node (e2e)", function () {
  this.timeout(120_000);
  const cluster = useCluster("node");
  const core = () => cluster.kubeConfig.makeApiClient(CoreV1Api);
  const apps = () => cluster.kubeConfig.makeApiClient(AppsV1Api);
  const ns = () => cluster.namespace;
  const log = (pod: string, container?: string) =>
    readContainerLog({
      dir: cluster.state.dir,
      namespace: ns(),
      pod,
      ...(container === undefined ? {} : { container }),
    });
  before(() => waitForDefaultServiceAccount(core(), ns()));
  let mostPodsOnOneNode = 0;
  const notePodsPerNode = async () => {
    const pods = (await core().listPodForAllNamespaces()).items.filter((p) => p.status?.phase === "Running");
    for (const { name } of localNodes) {
      mostPodsOnOneNode = Math.max(mostPodsOnOneNode, pods.filter((p) => p.spec?.nodeName === name).length);
    }
  };
  afterEach(notePodsPerNode);
  after(() => {
    process.stderr.write(`      local node: at most ${mostPodsOnOneNode} running pods on one node in this suite\n`);
  });

  it("registers one Ready node per site and keeps their Leases renewed", async () => {
    const nodes = (await core().listNode()).items;
    for (const { name, site } of localNodes) {
      const node = nodes.find((n) => n.metadata?.name === name);
      assert.deepEqual(
        {
          site: node?.metadata?.labels?.[siteLabel],
          hostname: node?.metadata?.labels?.["kubernetes.io/hostname"],
          ready: node?.status?.conditions?.find((c) => c.type === "Ready")?.status,
          pods: node?.status?.allocatable?.pods,
        },
        { site, hostname: name, ready: "True", pods: "110" },
      );
    }
    const coordination = cluster.kubeConfig.makeApiClient(CoordinationV1Api);
    const renewed = async () => {
      const lease = await coordination.readNamespacedLease({ name: "ksr-primary", namespace: "kube-node-lease" });
      // MicroTime comes back as a string from client-node, not a Date.
      return new Date(String(lease.spec?.renewTime)).getTime();
    };
    const first = await renewed();
    await waitFor("a lease renewal", async () => ((await renewed()) > first ? true : undefined), 25_000);
  });

  it("runs a Deployment to Available on its own pod IP, listed ready in its Service's EndpointSlice", async () => {
    const started = Date.now();
    await apps().createNamespacedDeployment({
      namespace: ns(),
      body: {
        metadata: { name: "web" },
        spec: {
          replicas: 1,
          selector: { matchLabels: { app: "web" } },
          template: {
            metadata: { labels: { app: "web" } },
            spec: {
              containers: [
                {
                  name: "web",
                  image: "debian:12",
                  command: ["python3", "-m", "http.server", "8080", "--directory", "/srv"],
                  ports: [{ name: "http", containerPort: 8080 }],
                  readinessProbe: { httpGet: { path: "/", port: "http" }, periodSeconds: 1 },
                  volumeMounts: [{ name: "site", mountPath: "/srv" }],
                },
              ],
              volumes: [{ name: "site", configMap: { name: "site" } }],
            },
          },
        },
      },
    });
    await core().createNamespacedConfigMap({
      namespace: ns(),
      body: { metadata: { name: "site" }, data: { "index.html": "hello from the local node\n" } },
    });
    await core().createNamespacedService({
      namespace: ns(),
      body: {
        metadata: { name: "web" },
        spec: { selector: { app: "web" }, ports: [{ port: 80, targetPort: "http" }] },
      },
    });
    await waitFor(
      "deployment web Available",
      async () => {
        const d = await apps().readNamespacedDeployment({ name: "web", namespace: ns() });
        return d.status?.conditions?.some((c) => c.type === "Available" && c.status === "True") === true &&
          d.status.readyReplicas === 1
          ? true
          : undefined;
      },
      60_000,
      async () => summarize(await podsWithLabel(core(), ns(), "app=web")),
    );
    process.stderr.write(
      `      local node: one-replica Deployment Available ${Date.now() - started} ms after create\n`,
    );
    const [pod] = await podsWithLabel(core(), ns(), "app=web");
    const ip = pod?.status?.podIP ?? "";
    assert.ok(isPodAddress(cluster.state, ip), `${ip} is not in the pod subnet ${cluster.state.podNetwork?.subnet}`);
    assert.equal(await httpText(`http://${ip}:8080/index.html`), "hello from the local node\n");
    await notePodsPerNode();
    const endpoints = await waitFor("the pod listed ready in the Service's EndpointSlice", async () => {
      const listed = await serviceEndpoints(cluster.kubeConfig.makeApiClient(DiscoveryV1Api), ns(), "web");
      return listed.some((e) => e.address === ip && e.ready) ? listed : undefined;
    });
    assert.deepEqual(endpoints, [{ address: ip, ready: true, node: pod?.spec?.nodeName, port: 8080 }]);
  });

  it("turns Ready off while an exec readiness probe fails, and back on when it passes", async () => {
    const script = `touch /tmp/ready; sleep 3; rm /tmp/ready; sleep 3; touch /tmp/ready; ${idle}`;
    await core().createNamespacedPod({
      namespace: ns(),
      body: {
        metadata: { name: "flaky", labels: { app: "flaky" } },
        spec: {
          containers: [
            shellContainer("main", script, {
              readinessProbe: {
                exec: { command: ["test", "-f", "/tmp/ready"] },
                periodSeconds: 1,
                failureThreshold: 1,
              },
            }),
          ],
        },
      },
    });
    const readiness = async () =>
      podCondition(await core().readNamespacedPod({ name: "flaky", namespace: ns() }), "Ready");
    const seen: string[] = [];
    await waitFor("Ready True, then False, then True", async () => {
      const status = (await readiness()) ?? "?";
      if (seen.at(-1) !== status) seen.push(status);
      return seen.join(",").includes("True,False,True") ? true : undefined;
    });
  });

  it("keeps a StatefulSet's data in its node-local PV across pod deletion, and deletes it with the claim", async () => {
    await apps().createNamespacedStatefulSet({
      namespace: ns(),
      body: {
        metadata: { name: "db" },
        spec: {
          serviceName: "db",
          replicas: 1,
          selector: { matchLabels: { app: "db" } },
          template: {
            metadata: { labels: { app: "db" } },
            spec: {
              nodeSelector: { [siteLabel]: "recovery" },
              containers: [
                shellContainer("db", `echo "run $(hostname)" >> /var/lib/db/runs; cat /var/lib/db/runs; ${idle}`, {
                  volumeMounts: [{ name: "data", mountPath: "/var/lib/db" }],
                }),
              ],
            },
          },
          volumeClaimTemplates: [
            {
              metadata: { name: "data" },
              spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "64Mi" } } },
            },
          ],
        },
      },
    });
    const running = async (uidNot?: string) =>
      waitFor("db-0 Ready", async () => {
        const pod = await core()
          .readNamespacedPod({ name: "db-0", namespace: ns() })
          .catch(() => undefined);
        return pod !== undefined && pod.metadata?.uid !== uidNot && podCondition(pod, "Ready") === "True"
          ? pod
          : undefined;
      });
    const first = await running();
    assert.equal(first.spec?.nodeName, "ksr-recovery");
    const claim = await core().readNamespacedPersistentVolumeClaim({ name: "data-db-0", namespace: ns() });
    const pv = await core().readPersistentVolume({ name: claim.spec?.volumeName ?? "" });
    const dataDir = pv.spec?.local?.path ?? "";
    assert.equal(dataDir.startsWith(join(nodeLayout(cluster.state.dir).volumes, "ksr-recovery")), true);
    assert.deepEqual(pv.spec?.nodeAffinity?.required?.nodeSelectorTerms[0]?.matchExpressions?.[0]?.values, [
      "ksr-recovery",
    ]);
    await waitFor("the first run's line in the PV", () =>
      Promise.resolve(existsSync(join(dataDir, "runs")) || undefined),
    );
    assert.equal(readFileSync(join(dataDir, "runs"), "utf8"), "run db-0\n");

    await core().deleteNamespacedPod({ name: "db-0", namespace: ns() });
    await running(first.metadata?.uid);
    await waitFor("the second run's line", () =>
      Promise.resolve(log("db-0").includes("run db-0\nrun db-0\n") ? true : undefined),
    );
    assert.equal(readFileSync(join(dataDir, "runs"), "utf8"), "run db-0\nrun db-0\n");

    await apps().deleteNamespacedStatefulSet({ name: "db", namespace: ns() });
    await waitFor("db-0 gone", async () =>
      (await podsWithLabel(core(), ns(), "app=db")).length === 0 ? true : undefined,
    );
    await core().deleteNamespacedPersistentVolumeClaim({ name: "data-db-0", namespace: ns() });
    await waitFor("the PV and its data deleted", async () => {
      const gone = await core()
        .readPersistentVolume({ name: pv.metadata?.name ?? "" })
        .then(
          () => false,
          () => true,
        );
      return gone && !existsSync(dataDir) ? true : undefined;
    });
  });

  it("completes a Job of the project's image running `ksr version`", async () => {
    const batch = cluster.kubeConfig.makeApiClient(BatchV1Api);
    await batch.createNamespacedJob({
      namespace: ns(),
      body: {
        metadata: { name: "version" },
        spec: {
          backoffLimit: 0,
          template: {
            metadata: { labels: { job: "version" } },
            spec: {
              restartPolicy: "Never",
              containers: [{ name: "ksr", image: "ghcr.io/example/kube-site-recovery:dev", args: ["version"] }],
            },
          },
        },
      },
    });
    await waitFor("job version Complete", async () => {
      const job = await batch.readNamespacedJob({ name: "version", namespace: ns() });
      return job.status?.conditions?.some((c) => c.type === "Complete" && c.status === "True") === true
        ? true
        : undefined;
    });
    const [pod] = await podsWithLabel(core(), ns(), "job=version");
    const name = pod?.metadata?.name ?? "";
    assert.deepEqual(
      { phase: pod?.status?.phase, exitCode: pod?.status?.containerStatuses?.[0]?.state?.terminated?.exitCode },
      { phase: "Succeeded", exitCode: 0 },
    );
    assert.match(log(name), /^ksr \d+\.\d+\.\d+/);
  });

  it("leaves a pod with an image outside the table Pending with a clear reason", async () => {
    await core().createNamespacedPod({
      namespace: ns(),
      body: { metadata: { name: "nginx" }, spec: { containers: [{ name: "nginx", image: "nginx:1.27" }] } },
    });
    const waiting = await waitFor("a waiting reason", async () => {
      const pod = await core().readNamespacedPod({ name: "nginx", namespace: ns() });
      return pod.status?.containerStatuses?.[0]?.state?.waiting?.reason !== undefined ? pod : undefined;
    });
    const state = waiting.status?.containerStatuses?.[0]?.state?.waiting;
    assert.equal(waiting.status?.phase, "Pending");
    assert.equal(state?.reason, "ErrImageNeverPull");
    assert.ok(state.message?.includes('image "nginx:1.27" cannot run on the ksr local node'), state.message);
  });

  it("spreads pods over the sites by the site label", async () => {
    await apps().createNamespacedDeployment({
      namespace: ns(),
      body: {
        metadata: { name: "spread" },
        spec: {
          replicas: 4,
          selector: { matchLabels: { app: "spread" } },
          template: {
            metadata: { labels: { app: "spread" } },
            spec: {
              topologySpreadConstraints: [
                {
                  maxSkew: 1,
                  topologyKey: siteLabel,
                  whenUnsatisfiable: "DoNotSchedule",
                  labelSelector: { matchLabels: { app: "spread" } },
                },
              ],
              containers: [shellContainer("main", idle)],
            },
          },
        },
      },
    });
    const pods = await waitFor("4 running spread pods", async () => {
      const list = await podsWithLabel(core(), ns(), "app=spread");
      return list.filter((p) => p.status?.phase === "Running").length === 4 ? list : undefined;
    });
    await notePodsPerNode();
    const perNode = (name: string) => pods.filter((p: V1Pod) => p.spec?.nodeName === name).length;
    assert.deepEqual(
      localNodes.map((n) => perNode(n.name)),
      [2, 2],
    );
  });

  it("runs init containers first and gives containers env, configMap and secret files, and a working directory", async () => {
    await core().createNamespacedSecret({
      namespace: ns(),
      body: { metadata: { name: "creds" }, stringData: { password: "s3cret" } },
    });
    await core().createNamespacedConfigMap({
      namespace: ns(),
      body: { metadata: { name: "settings" }, data: { mode: "fast" } },
    });
    await core().createNamespacedPod({
      namespace: ns(),
      body: {
        metadata: { name: "wired" },
        spec: {
          restartPolicy: "Never",
          initContainers: [
            shellContainer("prepare", "echo prepared > /work/init.txt", {
              volumeMounts: [{ name: "work", mountPath: "/work" }],
            }),
          ],
          containers: [
            shellContainer(
              "main",
              'echo "pwd=$(pwd) init=$(cat init.txt) pw=$PASSWORD mode=$MODE file=$(cat /etc/creds/password) ip=$MY_IP"',
              {
                workingDir: "/work",
                env: [
                  { name: "PASSWORD", valueFrom: { secretKeyRef: { name: "creds", key: "password" } } },
                  { name: "MODE", valueFrom: { configMapKeyRef: { name: "settings", key: "mode" } } },
                  { name: "MY_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } },
                ],
                volumeMounts: [
                  { name: "work", mountPath: "/work" },
                  { name: "creds", mountPath: "/etc/creds" },
                ],
              },
            ),
          ],
          volumes: [
            { name: "work", emptyDir: {} },
            { name: "creds", secret: { secretName: "creds" } },
          ],
        },
      },
    });
    const pod = await waitFor("pod wired Succeeded", async () => {
      const p = await core().readNamespacedPod({ name: "wired", namespace: ns() });
      return p.status?.phase === "Succeeded" || p.status?.phase === "Failed" ? p : undefined;
    });
    assert.equal(pod.status?.phase, "Succeeded");
    assert.equal(pod.status.initContainerStatuses?.[0]?.state?.terminated?.exitCode, 0);
    assert.equal(
      log("wired", "main").trim(),
      `pwd=/work init=prepared pw=s3cret mode=fast file=s3cret ip=${pod.status.podIP}`,
    );
  });

  it("runs the postgres image with Debian's PostgreSQL, listening on the pod's address", async function () {
    if (findPostgresBinDir() === undefined) this.skip();
    await core().createNamespacedPod({
      namespace: ns(),
      body: {
        metadata: { name: "pg" },
        spec: {
          containers: [
            {
              name: "postgres",
              image: "postgres:16",
              env: [
                { name: "POSTGRES_PASSWORD", value: "pw" },
                { name: "POSTGRES_DB", value: "shop" },
              ],
              readinessProbe: { exec: { command: ["pg_isready", "-h", "/var/run/postgresql"] }, periodSeconds: 1 },
              volumeMounts: [{ name: "data", mountPath: "/var/lib/postgresql/data" }],
            },
          ],
          volumes: [{ name: "data", emptyDir: {} }],
        },
      },
    });
    const pod = await waitFor("postgres Ready", async () => {
      const p = await core().readNamespacedPod({ name: "pg", namespace: ns() });
      return podCondition(p, "Ready") === "True" ? p : undefined;
    });
    const ip = pod.status?.podIP ?? "";
    const query = execFileSync(
      "psql",
      [
        "-h",
        ip,
        "-U",
        "postgres",
        "-d",
        "shop",
        "-tAc",
        "select current_database() || ' ' || host(inet_server_addr())",
      ],
      { env: { ...process.env, PGPASSWORD: "pw" }, encoding: "utf8" },
    );
    assert.equal(query.trim(), `shop ${ip}`);
  });

  it("exposes a Block claim as a device file of the requested size", async () => {
    await core().createNamespacedPersistentVolumeClaim({
      namespace: ns(),
      body: {
        metadata: { name: "disk" },
        spec: { accessModes: ["ReadWriteOnce"], volumeMode: "Block", resources: { requests: { storage: "8Mi" } } },
      },
    });
    await core().createNamespacedPod({
      namespace: ns(),
      body: {
        metadata: { name: "block" },
        spec: {
          restartPolicy: "Never",
          containers: [
            shellContainer("main", "wc -c < /dev/xvdb; printf ksr | dd of=/dev/xvdb conv=notrunc 2>/dev/null", {
              volumeDevices: [{ name: "disk", devicePath: "/dev/xvdb" }],
            }),
          ],
          volumes: [{ name: "disk", persistentVolumeClaim: { claimName: "disk" } }],
        },
      },
    });
    await waitFor("pod block Succeeded", async () => {
      const p = await core().readNamespacedPod({ name: "block", namespace: ns() });
      return p.status?.phase === "Succeeded" ? p : undefined;
    });
    assert.equal(log("block").trim(), String(8 * 2 ** 20));
    const claim = await core().readNamespacedPersistentVolumeClaim({ name: "disk", namespace: ns() });
    const pv = await core().readPersistentVolume({ name: claim.spec?.volumeName ?? "" });
    const image = pv.spec?.volumeMode === "Block" ? (pv.spec.local?.path ?? "") : "";
    assert.equal(readFileSync(image).subarray(0, 3).toString(), "ksr");
  });

  it("holds liveness and readiness until the startup probe passes", async () => {
    await core().createNamespacedPod({
      namespace: ns(),
      body: {
        metadata: { name: "slow-start" },
        spec: {
          containers: [
            shellContainer("main", `sleep 4; touch /tmp/started; ${idle}`, {
              startupProbe: {
                exec: { command: ["test", "-f", "/tmp/started"] },
                periodSeconds: 1,
                failureThreshold: 10,
              },
              livenessProbe: {
                exec: { command: ["test", "-f", "/tmp/started"] },
                periodSeconds: 1,
                failureThreshold: 1,
              },
              readinessProbe: { exec: { command: ["true"] }, periodSeconds: 1 },
            }),
          ],
        },
      },
    });
    const early = await waitFor("the container running", async () => {
      const p = await core().readNamespacedPod({ name: "slow-start", namespace: ns() });
      return p.status?.containerStatuses?.[0]?.state?.running !== undefined ? p : undefined;
    });
    assert.deepEqual(
      [early.status?.containerStatuses?.[0]?.started, podCondition(early, "Ready")],
      [false, "False"],
      "not started, not ready while the startup probe fails",
    );
    const ready = await waitFor("Ready after start-up", async () => {
      const p = await core().readNamespacedPod({ name: "slow-start", namespace: ns() });
      return podCondition(p, "Ready") === "True" ? p : undefined;
    });
    assert.deepEqual(
      [ready.status?.containerStatuses?.[0]?.started, ready.status?.containerStatuses?.[0]?.restartCount],
      [true, 0],
    );
  });

  it("restarts a container whose liveness probe fails", async () => {
    await core().createNamespacedPod({
      namespace: ns(),
      body: {
        metadata: { name: "unhealthy" },
        spec: {
          containers: [
            shellContainer("main", idle, {
              livenessProbe: { tcpSocket: { port: 1 }, periodSeconds: 1, failureThreshold: 2 },
            }),
          ],
        },
      },
    });
    const pod = await waitFor("a liveness restart", async () => {
      const p = await core().readNamespacedPod({ name: "unhealthy", namespace: ns() });
      return (p.status?.containerStatuses?.[0]?.restartCount ?? 0) >= 1 ? p : undefined;
    });
    // The shell exits 0 on the SIGTERM the failed probe brings.
    assert.equal(pod.status?.containerStatuses?.[0]?.lastState?.terminated?.exitCode, 0);
    const events = (
      await core().listNamespacedEvent({ namespace: ns(), fieldSelector: "involvedObject.name=unhealthy" })
    ).items;
    assert.ok(events.some((e) => e.reason === "Killing" && e.message?.includes("failed liveness probe")));
  });

  it("restarts a failing container with back-off and reports its last exit code", async () => {
    await core().createNamespacedPod({
      namespace: ns(),
      body: {
        metadata: { name: "crasher" },
        spec: { restartPolicy: "OnFailure", containers: [shellContainer("main", "exit 3")] },
      },
    });
    const pod = await waitFor(
      "a restart",
      async () => {
        const p = await core().readNamespacedPod({ name: "crasher", namespace: ns() });
        return (p.status?.containerStatuses?.[0]?.restartCount ?? 0) >= 1 ? p : undefined;
      },
      40_000,
    );
    const status = pod.status?.containerStatuses?.[0];
    assert.equal(status?.lastState?.terminated?.exitCode, 3);
    assert.equal(pod.status?.phase, "Running");
  });
});
