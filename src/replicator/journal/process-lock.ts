// One writer per journal: a lock file holding the owner's pid. A lock left by a process that no
// longer runs (killed, crashed) is taken over, so a crash never needs a manual clean-up.
import { open, readFile, rm } from "node:fs/promises";
import { JournalUsageError } from "./errors.js";

function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

export async function acquireProcessLock(path: string, what: string): Promise<() => Promise<void>> {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const handle = await open(path, "wx", 0o600);
      await handle.writeFile(String(process.pid));
      await handle.close();
      return () => rm(path, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    const owner = Number((await readFile(path, "utf8").catch(() => "")).trim());
    if (Number.isSafeInteger(owner) && owner > 0 && (owner === process.pid || processRuns(owner)))
      throw new JournalUsageError(`${what} is in use by process ${owner} (lock file ${path})`);
    await rm(path, { force: true });
  }
  throw new JournalUsageError(`could not lock ${what} (lock file ${path} keeps reappearing)`);
}
