// `kubectl exec POD -- true` latency on a dedicated `ksr local` cluster, with
// the steps of its path measured in the same run so their cost is visible:
//  1. `nsenter … true` into the container, run directly (what the node does last);
//  2. `kubectl get pod` (kubectl's own start-up plus one API round trip);
//  3. `kubectl exec` as kubectl 1.34 sends it (WebSocket to the apiserver, SPDY to the node);
//  4. `kubectl exec` with KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false (SPDY end to end).
// Usage: npm run bench -- kubelet [--runs 30]
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { CoreV1Api } from "@kubernetes/client-node";
import { down, up } from "../src/local/cluster.js";
import { nodeLayout } from "../src/local/node/layout.js";
import type { ProcessRecord } from "../src/local/processes.js";
import { findHostTools } from "../src/local/node/runtime.js";
import { kubeConfigFor } from "../test/fixture/cluster.js";
import { eventually } from "../test/fixture/eventually.js";

function timed(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, args, { env, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code === 0) resolve(performance.now() - started);
      else reject(new Error(`${command} ${args.join(" ")} exited ${code}: ${stderr}`));
    });
  });
}

const percentile = (samples: number[], p: number) => {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
};

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { runs: { type: "string", default: "30" } } });
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs ${values.runs} is not a positive integer`);
  const dir = mkdtempSync(join(tmpdir(), "ksr-bench-kubelet-"));
  const state = await up({ dir, readyTimeoutMs: 180_000 });
  try {
    const core = kubeConfigFor(state).makeApiClient(CoreV1Api);
    const namespace = "default";
    const name = "bench-exec";
    await core.createNamespacedPod({
      namespace,
      body: {
        metadata: { name },
        spec: {
          terminationGracePeriodSeconds: 1,
          containers: [
            {
              name: "main",
              image: "busybox",
              command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
            },
          ],
        },
      },
    });
    const pod = await eventually(
      "the bench pod ready",
      async () => {
        const current = await core.readNamespacedPod({ name, namespace });
        return current.status?.conditions?.find((c) => c.type === "Ready")?.status === "True" ? current : undefined;
      },
      60_000,
    );
    const processes = nodeLayout(dir).processes;
    const record = readdirSync(processes)
      .filter((file) => file.startsWith(pod.metadata?.uid ?? "-"))
      .map((file) => JSON.parse(readFileSync(join(processes, file), "utf8")) as ProcessRecord)[0];
    if (record === undefined) throw new Error(`no process record for pod ${name} in ${processes}`);
    const tools = findHostTools();
    const kubectl = join(state.binDir, "kubectl");
    const env = { ...process.env, KUBECONFIG: state.kubeconfig };
    const scenarios: [string, string, string[], NodeJS.ProcessEnv][] = [
      [
        "nsenter into the container, direct",
        tools.nsenter,
        [`--target=${record.pid}`, "--mount", "--uts", "--net", "--root", "--wd", "--", "true"],
        env,
      ],
      ["kubectl get pod (start-up + 1 API call)", kubectl, ["get", "pod", name, "-o", "name"], env],
      ["kubectl exec -- true (WebSocket → apiserver → SPDY)", kubectl, ["exec", name, "--", "true"], env],
      [
        "kubectl exec -- true (SPDY end to end)",
        kubectl,
        ["exec", name, "--", "true"],
        { ...env, KUBECTL_REMOTE_COMMAND_WEBSOCKETS: "false" },
      ],
    ];
    const results: Record<string, number | string>[] = [];
    for (const [scenario, command, commandArgs, scenarioEnv] of scenarios) {
      for (let i = 0; i < 3; i++) await timed(command, commandArgs, scenarioEnv); // warm caches and the SAR cache
      const samples: number[] = [];
      for (let i = 0; i < runs; i++) samples.push(await timed(command, commandArgs, scenarioEnv));
      results.push({
        scenario,
        runs,
        p50Ms: percentile(samples, 50),
        p90Ms: percentile(samples, 90),
        minMs: Math.min(...samples),
      });
    }
    const baseline = Number(results[0]?.p50Ms);
    for (const result of results) result.ratioToNsenter = Number(result.p50Ms) / baseline;
    for (const result of results)
      process.stdout.write(
        `${String(result.scenario).padEnd(55)} p50 ${Number(result.p50Ms).toFixed(1).padStart(7)} ms  p90 ${Number(result.p90Ms).toFixed(1).padStart(7)} ms  ×${Number(result.ratioToNsenter).toFixed(1)} of nsenter\n`,
      );
    writeFileSync(
      join(import.meta.dirname, "..", "..", "bench", "results", "kubelet.json"),
      JSON.stringify(results, null, 2) + "\n",
    );
  } finally {
    await down({ dir });
    rmSync(dir, { recursive: true, force: true });
  }
}
