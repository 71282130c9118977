// `ksr install` and `ksr uninstall`.
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { Command } from "commander";
import { install, uninstall, waitForOperator, type Progress } from "../../install/install.js";
import { defaultNamespace, imageFlag, projectImage, type LeaderElectionFlags } from "../../install/manifests.js";
import { defaultClusterDir } from "../../local/cluster.js";
import { parseOperatorConfig } from "../../notifications/config.js";
import { durationMs } from "../../util/duration.js";
import { leaderElectionTiming, withLeaderElection } from "./leader-election-flags.js";

/** --kubeconfig, else $KUBECONFIG, else ~/.kube/config, else the `ksr local` cluster's. */
export function loadKubeConfig(path: string | undefined): KubeConfig {
  const kubeConfig = new KubeConfig();
  const local = join(defaultClusterDir, "kubeconfig");
  const file =
    path ??
    (process.env.KUBECONFIG === undefined && !existsSync(join(homedir(), ".kube", "config")) && existsSync(local)
      ? local
      : undefined);
  if (file === undefined) kubeConfig.loadFromDefault();
  else if (!existsSync(file)) throw new Error(`kubeconfig ${file} does not exist`);
  else kubeConfig.loadFromFile(file);
  if (kubeConfig.getCurrentCluster() === null)
    throw new Error("no cluster to install into: pass --kubeconfig, set KUBECONFIG, or start one with `ksr local up`");
  return kubeConfig;
}

/** Plain lines when stderr is not a terminal; one rewritten status line when it is. */
function progressLine(prefix: string): Progress & { done(): void } {
  const tty = process.stderr.isTTY;
  let open = false;
  const progress = (line: string) => {
    if (tty) {
      process.stderr.write(`\r\x1b[2K${prefix}: ${line}`);
      open = true;
    } else {
      process.stderr.write(`${prefix}: ${line}\n`);
    }
  };
  progress.done = () => {
    if (open) process.stderr.write("\n");
    open = false;
  };
  return progress;
}

function timeout(value: string): number {
  const ms = durationMs(value);
  if (ms === undefined) throw new Error(`--timeout must be a duration such as 90s or 5m, got "${value}"`);
  return ms;
}

function replicaCount(value: string): number {
  const replicas = Number(value);
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 10)
    throw new Error(`--replicas must be a whole number from 1 to 10, got "${value}"`);
  return replicas;
}

/** The file's text after checking it: nothing is applied when it is not a valid configuration. */
function operatorConfigFile(path: string): string {
  if (!existsSync(path)) throw new Error(`--config ${path} does not exist`);
  const text = readFileSync(path, "utf8");
  parseOperatorConfig(text, `--config ${path}`);
  return text;
}

export function installCommands(): Command[] {
  const installCommand = withLeaderElection(
    new Command("install").description(
      "install or update the CRDs, the operator's RBAC and its Deployment (idempotent)",
    ),
  )
    .option("--kubeconfig <file>", "cluster to install into (default: $KUBECONFIG, ~/.kube/config, or `ksr local`'s)")
    .option("--namespace <ns>", "namespace of the operator", defaultNamespace)
    .option(
      "--image <image>",
      "the project's image: the operator runs it and places its replicators with it",
      projectImage,
    )
    .option("--replicas <n>", "operator replicas, spread across sites (one leads, the others stand by)", "2")
    .option(
      "--config <file>",
      "the operator's configuration (notifications: docs/notifications.md), checked, then applied as the ksr-operator-config ConfigMap",
    )
    .option("--wait", "wait until every replica is available and one holds the lease")
    .option("--timeout <duration>", "how long --wait waits", "5m")
    .action(
      async (
        options: LeaderElectionFlags & {
          kubeconfig?: string;
          namespace: string;
          image: string;
          replicas: string;
          config?: string;
          wait?: boolean;
          timeout: string;
        },
      ) => {
        leaderElectionTiming(options);
        const { leaseDuration, renewDeadline, retryPeriod } = options;
        const settings = {
          namespace: options.namespace,
          image: imageFlag(options.image, "--image"),
          replicas: replicaCount(options.replicas),
          leaderElection: { leaseDuration, renewDeadline, retryPeriod },
          ...(options.config === undefined ? {} : { config: operatorConfigFile(options.config) }),
        };
        const kubeConfig = loadKubeConfig(options.kubeconfig);
        const timeoutMs = timeout(options.timeout);
        const progress = progressLine("ksr install");
        await install(kubeConfig, settings, (line) => process.stderr.write(`ksr install: ${line}\n`));
        if (options.wait === true) {
          try {
            await waitForOperator(kubeConfig, settings, { timeoutMs, progress });
          } finally {
            progress.done();
          }
          process.stderr.write(`ksr install: the operator is ready in namespace ${options.namespace}\n`);
        }
      },
    );
  const uninstallCommand = new Command("uninstall")
    .description(
      "delete every dr.ksr.io object, the CRDs, the operator and its namespace, and wait until they are gone",
    )
    .option("--kubeconfig <file>", "cluster to uninstall from")
    .option("--namespace <ns>", "namespace of the operator", defaultNamespace)
    .option("--timeout <duration>", "how long to wait for each step", "5m")
    .action(async (options: { kubeconfig?: string; namespace: string; timeout: string }) => {
      const progress = progressLine("ksr uninstall");
      try {
        await uninstall(loadKubeConfig(options.kubeconfig), options.namespace, {
          timeoutMs: timeout(options.timeout),
          progress,
        });
      } finally {
        progress.done();
      }
      process.stderr.write("ksr uninstall: done\n");
    });
  return [installCommand, uninstallCommand];
}
