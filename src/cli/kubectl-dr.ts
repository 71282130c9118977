// `kubectl dr`: the kubectl plugin for day-two operations (failover, approve, drills).
import { Command } from "commander";
import { runProgram } from "./run.js";
import { version } from "./version.js";

export function kubectlDrProgram(): Command {
  const program = new Command("kubectl-dr").description("kube-site-recovery operations from kubectl").version(version);
  program
    .command("version")
    .description("print the plugin version")
    .action(() => {
      process.stdout.write(`kubectl-dr ${version}\n`);
    });
  return program;
}

export async function kubectlDrMain(argv: string[]): Promise<void> {
  await runProgram(kubectlDrProgram(), argv);
}
