// `ksr replicator points|hydrate|rollback|prune`: recovery points of a master target's undo journal.
// They open the journal directly (a master target using it must be stopped, or the lock says so).
import { resolve } from "node:path";
import { Command } from "commander";
import { JournalUsageError } from "../../replicator/journal/errors.js";
import { durationMs } from "../../util/duration.js";
import { hydrate, rollback } from "../../replicator/journal/materialise.js";
import type { RecoveryPoint } from "../../replicator/journal/point.js";
import { UndoJournal } from "../../replicator/journal/undo-journal.js";

const pointHelp = 'a point id, "latest", "latest-app", or an ISO time (the newest point at or before it)';

/** Resolves a user's point selector against the retained points. */
export function selectPoint(journal: UndoJournal, selector: string): RecoveryPoint {
  if (selector === "latest" || selector === "latest-app") {
    const point = journal.latestPoint(selector === "latest-app" ? { consistency: "app" } : {});
    if (point === undefined)
      throw new JournalUsageError(`the journal has no ${selector === "latest" ? "" : "app-consistent "}point`);
    return point;
  }
  if (/^\d{4}-\d{2}-\d{2}T/.test(selector)) {
    const time = Date.parse(selector);
    if (Number.isNaN(time)) throw new JournalUsageError(`"${selector}" is not a valid ISO time`);
    const point = journal.latestPoint({ atOrBefore: time });
    if (point === undefined) throw new JournalUsageError(`no retained point is at or before ${selector}`);
    return point;
  }
  return journal.point(selector);
}

function describePoint(point: RecoveryPoint): string {
  const group = point.group === "" ? "" : `  group=${point.group}`;
  return `${point.id}  seq=${point.seq}  ${new Date(point.timeUnixMs).toISOString()}  ${point.consistency}${group}`;
}

async function withJournal<T>(
  directory: string,
  readOnly: boolean,
  work: (journal: UndoJournal) => Promise<T>,
): Promise<T> {
  const journal = await UndoJournal.open(resolve(directory), { readOnly });
  try {
    return await work(journal);
  } finally {
    await journal.close();
  }
}

const report = (message: string): void => {
  process.stderr.write(`${message}\n`);
};

function pointsCommand(): Command {
  return new Command("points")
    .description("list the retained recovery points (oldest first) and the journal's size")
    .requiredOption("--journal <dir>", "the replica's undo journal directory")
    .option("--json", "print JSON instead of text")
    .action(async (options: { journal: string; json?: boolean }) => {
      await withJournal(options.journal, true, async (journal) => {
        const points = journal.points();
        const size = await journal.size();
        if (options.json === true) {
          process.stdout.write(`${JSON.stringify({ points, size }, null, 2)}\n`);
          return;
        }
        for (const point of points) process.stdout.write(`${describePoint(point)}\n`);
        process.stdout.write(
          `${points.length} points; journal ${size.segmentBytes} bytes in ${size.segments} segments + ${size.objectBytes} bytes of moved entries\n`,
        );
      });
    });
}

function hydrateCommand(): Command {
  return new Command("hydrate")
    .description("write a recovery point into a new directory or image; the replica is not changed (resumable)")
    .requiredOption("--journal <dir>", "the replica's undo journal directory")
    .requiredOption("--replica <path>", "the replica directory (or image file)")
    .requiredOption("--point <selector>", pointHelp)
    .requiredOption("--dest <path>", "a new (or empty) directory, or a new image file path")
    .action(async (options: { journal: string; replica: string; point: string; dest: string }) => {
      await withJournal(options.journal, false, async (journal) => {
        const point = selectPoint(journal, options.point);
        report(`hydrating ${describePoint(point)}`);
        await hydrate(journal, resolve(options.replica), point, resolve(options.dest), { onProgress: report });
      });
    });
}

function rollbackCommand(): Command {
  return new Command("rollback")
    .description("turn the replica itself into a recovery point, dropping every newer point (resumable)")
    .requiredOption("--journal <dir>", "the replica's undo journal directory")
    .requiredOption("--replica <path>", "the replica directory (or image file)")
    .requiredOption("--point <selector>", pointHelp)
    .option("--yes", "confirm: points newer than the chosen one are discarded")
    .action(async (options: { journal: string; replica: string; point: string; yes?: boolean }) => {
      await withJournal(options.journal, false, async (journal) => {
        const point = selectPoint(journal, options.point);
        const newer = journal.points().filter((candidate) => candidate.seq > point.seq).length;
        if (options.yes !== true)
          throw new JournalUsageError(
            `rolling back to ${point.id} discards ${newer} newer points; add --yes to confirm`,
          );
        report(`rolling back to ${describePoint(point)}`);
        await rollback(journal, resolve(options.replica), point, { onProgress: report });
      });
    });
}

/** "30s", "5m", "24h", "15d" → milliseconds. */
export function parseRetention(value: string): number {
  const ms = durationMs(value);
  if (ms === undefined)
    throw new JournalUsageError(`--retention "${value}": expected a positive duration like 30s, 5m, 24h or 15d`);
  return ms;
}

function pruneCommand(): Command {
  return new Command("prune")
    .description("drop points older than the retention window, with the journal only they needed")
    .requiredOption("--journal <dir>", "the replica's undo journal directory")
    .requiredOption("--retention <duration>", "keep points this recent: 30s, 5m, 24h, 15d ...")
    .action(async (options: { journal: string; retention: string }) => {
      const retentionMs = parseRetention(options.retention);
      await withJournal(options.journal, false, async (journal) => {
        const { removedPoints, floor } = await journal.prune(retentionMs, Date.now());
        const size = await journal.size();
        process.stdout.write(
          `removed ${removedPoints.length} points; oldest kept ${floor === null ? "none" : describePoint(floor)}; journal ${size.segmentBytes + size.objectBytes} bytes\n`,
        );
      });
    });
}

/** Adds the journal subcommands to the `ksr replicator` command group. */
export function withJournalCommands(replicator: Command): Command {
  return replicator
    .addCommand(pointsCommand())
    .addCommand(hydrateCommand())
    .addCommand(rollbackCommand())
    .addCommand(pruneCommand());
}
