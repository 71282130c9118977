// `ksr local node-agent` (started by `ksr local up`) and `ksr local logs`.
import { Command, Option } from "commander";
import { defaultClusterDir } from "../../local/cluster.js";
import { runNodeAgent } from "../../local/node/agent.js";
import { readContainerLog } from "../../local/node/logs.js";

const dirOption = () =>
  new Option("--dir <dir>", "directory holding the cluster's data, PKI, logs and kubeconfig").default(
    defaultClusterDir,
  );

export function nodeAgentCommand(): Command {
  return new Command("node-agent")
    .description("run the two site nodes' pods as local processes (started by `ksr local up`)")
    .addOption(dirOption())
    .action(async (options: { dir: string }) => {
      await runNodeAgent(options.dir);
    });
}

export function logsCommand(): Command {
  return new Command("logs")
    .description(
      "print a container's output from the local node's log files (kubectl logs reads the same through the API)",
    )
    .argument("<pod>", "pod name")
    .option("-c, --container <name>", "container name (needed when the pod has several)")
    .option("-n, --namespace <namespace>", "namespace of the pod", "default")
    .option("-p, --previous", "the previous run of a restarted container")
    .addOption(dirOption())
    .action((pod: string, options: { container?: string; namespace: string; previous?: boolean; dir: string }) => {
      process.stdout.write(
        readContainerLog({
          dir: options.dir,
          namespace: options.namespace,
          pod,
          ...(options.container === undefined ? {} : { container: options.container }),
          previous: options.previous === true,
        }),
      );
    });
}
