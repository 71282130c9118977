// `npm run bench -- dns [--lookups 200]`: DNS lookup time from a pod on a
// dedicated `ksr local` cluster. A pod on the primary site times:
//   - getaddrinfo("kubernetes.default") as applications resolve (resolv.conf, search path, ndots:5),
//   - one A query for the FQDN to the kube-dns ClusterIP (kube-proxy DNAT and the NetworkPolicy queue on the way),
//   - the same query straight to the primary node's CoreDNS pod: the baseline, without the Service path.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { CoreV1Api } from "@kubernetes/client-node";
import { down, up } from "../src/local/cluster.js";
import { localNodes, siteLabel } from "../src/local/node/layout.js";
import { readContainerLog } from "../src/local/node/logs.js";
import { clusterDnsAddress } from "../src/local/node/network.js";
import { kubeConfigFor } from "../test/fixture/cluster.js";

const script = `
import json, os, socket, struct, time
n = int(os.environ["LOOKUPS"])
def query(server, name):
    packet = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    packet += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\\0" + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(packet, (server, 53))
        answer = s.recv(512)
        assert answer[:2] == packet[:2] and struct.unpack(">H", answer[6:8])[0] >= 1, "no answer"
def timed(fn):
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return sorted(samples)
fqdn = "kubernetes.default.svc.cluster.local"
print(json.dumps({
    "getaddrinfo": timed(lambda: socket.getaddrinfo("kubernetes.default", 443, socket.AF_INET, socket.SOCK_STREAM)),
    "clusterIP": timed(lambda: query(os.environ["DNS_SERVICE"], fqdn)),
    "direct": timed(lambda: query(os.environ["COREDNS"], fqdn)),
}))
`;

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN;

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { lookups: { type: "string", default: "200" } } });
  const lookups = Number(values.lookups);
  const dir = mkdtempSync(join(tmpdir(), "ksr-bench-dns-"));
  try {
    const state = await up({ dir, readyTimeoutMs: 180_000 });
    const plan = state.podNetwork;
    if (plan === undefined) throw new Error("no pod network (root and iproute2 needed): no cluster DNS to measure");
    const core = kubeConfigFor(state).makeApiClient(CoreV1Api);
    for (;;) {
      const ready = await core.readNamespacedServiceAccount({ name: "default", namespace: "default" }).then(
        () => true,
        () => false,
      );
      if (ready) break;
      await sleep(200);
    }
    // `up` returned with a ready CoreDNS pod on each node; the Service prefers the client's node's.
    const dnsPods = await core.listNamespacedPod({ namespace: "kube-system", labelSelector: "k8s-app=kube-dns" });
    const coreDns = dnsPods.items.find(
      (pod) => pod.spec?.nodeName === localNodes.find((node) => node.site === "primary")?.name,
    )?.status?.podIP;
    if (coreDns === undefined) throw new Error("no CoreDNS pod on the primary node");
    await core.createNamespacedPod({
      namespace: "default",
      body: {
        metadata: { name: "dns-bench" },
        spec: {
          nodeSelector: { [siteLabel]: "primary" },
          restartPolicy: "Never",
          containers: [
            {
              name: "bench",
              image: "debian:12",
              command: ["python3", "-c", script],
              env: [
                { name: "LOOKUPS", value: String(lookups) },
                { name: "DNS_SERVICE", value: clusterDnsAddress(plan.serviceSubnet) },
                { name: "COREDNS", value: coreDns },
              ],
            },
          ],
        },
      },
    });
    let phase: string | undefined;
    do {
      await sleep(500);
      phase = (await core.readNamespacedPod({ name: "dns-bench", namespace: "default" })).status?.phase;
    } while (phase !== "Succeeded" && phase !== "Failed");
    const output = readContainerLog({ dir, namespace: "default", pod: "dns-bench" }).trim();
    if (phase === "Failed") throw new Error(`the bench pod failed:\n${output}`);
    const results = JSON.parse(output.split("\n").at(-1) ?? "{}") as Record<string, number[]>;
    const direct = percentile(results.direct ?? [], 0.5);
    process.stdout.write(`DNS lookups from a pod, ${lookups} each (ms):\n`);
    for (const [name, samples] of Object.entries(results)) {
      const p50 = percentile(samples, 0.5);
      process.stdout.write(
        `${name.padEnd(12)} p50 ${p50.toFixed(3)}  p90 ${percentile(samples, 0.9).toFixed(3)}  ` +
          `p99 ${percentile(samples, 0.99).toFixed(3)}  p50/direct ${(p50 / direct).toFixed(2)}\n`,
      );
    }
  } finally {
    await down({ dir });
    rmSync(dir, { recursive: true, force: true });
  }
}
