// The `ksr` command line.
import { Command } from "commander";
import { withJournalCommands } from "./commands/journal.js";
import { installCommands } from "./commands/install.js";
import { localCommand } from "./commands/local.js";
import { operatorCommand } from "./commands/operator.js";
import { replicateCommand } from "./commands/replicate.js";
import { replicatorCommand } from "./commands/replicator.js";
import { runProgram } from "./run.js";
import { version } from "./version.js";

export function ksrProgram(): Command {
  const program = new Command("ksr")
    .description("kube-site-recovery: disaster recovery for Kubernetes")
    .version(version);
  program
    .command("version")
    .description("print the version")
    .action(() => {
      process.stdout.write(`ksr ${version}\n`);
    });
  program.addCommand(localCommand());
  program.addCommand(withJournalCommands(replicatorCommand()));
  program.addCommand(replicateCommand());
  program.addCommand(operatorCommand());
  for (const command of installCommands()) program.addCommand(command);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  await runProgram(ksrProgram(), argv);
}
