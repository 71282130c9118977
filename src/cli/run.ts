// Shared CLI plumbing: user errors become one clear line on stderr and exit code 1.
import { CommanderError, type Command } from "commander";

export async function runProgram(program: Command, argv: string[]): Promise<void> {
  program.exitOverride();
  try {
    await program.parseAsync(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      process.exitCode = error.exitCode;
      return;
    }
    process.stderr.write(`${program.name()}: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  }
}
