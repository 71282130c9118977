// `ksr local up|down|status`: the local two-site cluster.
import { Command, Option } from "commander";
import { defaultClusterDir, down, status, up } from "../../local/cluster.js";
import { parsePort } from "../../local/ports.js";
import { describeSite, siteStates } from "../../local/node/sites.js";
import { logsCommand, nodeAgentCommand } from "./local-node.js";
import { siteCommand } from "./local-site.js";

export function localCommand(): Command {
  const local = new Command("local").description("run a real Kubernetes control plane on this machine, without Docker");
  const dirOption = () =>
    new Option("--dir <dir>", "directory holding the cluster's data, PKI, logs and kubeconfig").default(
      defaultClusterDir,
    );

  local
    .command("up")
    .description(
      "start etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback; print the kubeconfig path",
    )
    .addOption(dirOption())
    .option("--api-port <port>", "kube-apiserver port on 127.0.0.1 (default: a free port, kept across restarts)")
    .action(async (options: { dir: string; apiPort?: string }) => {
      const started = Date.now();
      const state = await up({
        dir: options.dir,
        apiPort: options.apiPort === undefined ? undefined : parsePort(options.apiPort, "--api-port"),
        progress: (message) => process.stderr.write(`ksr local: ${message}\n`),
      });
      process.stderr.write(
        `ksr local: control plane ready at ${state.server} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`,
      );
      process.stdout.write(`${state.kubeconfig}\n`);
    });

  local
    .command("down")
    .description("stop every process `ksr local up` started (by recorded pid)")
    .addOption(dirOption())
    .option("--purge", "also delete the cluster's data, PKI and logs")
    .action(async (options: { dir: string; purge?: boolean }) => {
      const stopped = await down({ dir: options.dir, purge: options.purge === true });
      process.stderr.write(
        stopped.length === 0
          ? "ksr local: nothing was running\n"
          : `ksr local: stopped ${stopped.map((c) => `${c.name} (pid ${c.pid})`).join(", ")}\n`,
      );
    });

  local
    .command("status")
    .description("report each component's process and health")
    .addOption(dirOption())
    .action(async (options: { dir: string }) => {
      const report = await status(options.dir);
      if (report.state === undefined) {
        process.stdout.write(`no local cluster in ${options.dir}; start one with: ksr local up --dir ${options.dir}\n`);
        process.exitCode = 1;
        return;
      }
      process.stdout.write(`kubeconfig: ${report.state.kubeconfig}\nserver:     ${report.state.server}\n`);
      if (report.components.length === 0)
        process.stdout.write(`not running; start it with: ksr local up --dir ${options.dir}\n`);
      for (const c of report.components)
        process.stdout.write(`${c.name.padEnd(24)} pid ${String(c.pid).padEnd(8)} ${c.detail}\n`);
      for (const { site, node, state } of siteStates(report.state.dir))
        process.stdout.write(`site ${site.padEnd(19)} node ${node.padEnd(14)} ${describeSite(state)}\n`);
      if (report.components.length === 0 || report.components.some((c) => !c.healthy)) process.exitCode = 1;
    });
  local.addCommand(nodeAgentCommand());
  local.addCommand(logsCommand());
  local.addCommand(siteCommand());
  return local;
}
