// `ksr replicator points|hydrate|rollback|prune`: recovery points of a master target's undo journal.
// Remote mode talks to a running master target's RecoveryPoints service (mTLS, operator role);
// local mode opens the journal directory itself (its master target must be stopped).
import { resolve } from "node:path";
import { Command } from "commander";
import { JournalUsageError } from "../../replicator/journal/errors.js";
import { durationMs } from "../../util/duration.js";
import { hydrate, rollback } from "../../replicator/journal/materialise.js";
import type { RecoveryPoint } from "../../replicator/journal/point.js";
import { UndoJournal, type JournalSize } from "../../replicator/journal/undo-journal.js";
import type { RecoveryPointsClient } from "../../gen/ksr/replication/v1/replication.js";
import {
  connectRecoveryPoints,
  hydrateRemote,
  listPoints,
  pointsOf,
  prunePoints,
  rollbackTo,
} from "../../replicator/recovery-points-client.js";

const pointHelp = 'a point id, "latest", "latest-app", or an ISO time (the newest point at or before it)';

/** Resolves a user's point selector against the retained points (oldest first). */
export function selectPoint(points: readonly RecoveryPoint[], selector: string): RecoveryPoint {
  const newest = (filter: (point: RecoveryPoint) => boolean) => points.filter(filter).at(-1);
  if (selector === "latest" || selector === "latest-app") {
    const point = newest((candidate) => selector === "latest" || candidate.consistency === "app");
    if (point === undefined)
      throw new JournalUsageError(`the journal has no ${selector === "latest" ? "" : "app-consistent "}point`);
    return point;
  }
  if (/^\d{4}-\d{2}-\d{2}T/.test(selector)) {
    const time = Date.parse(selector);
    if (Number.isNaN(time)) throw new JournalUsageError(`"${selector}" is not a valid ISO time`);
    const point = newest((candidate) => candidate.timeUnixMs <= time);
    if (point === undefined) throw new JournalUsageError(`no retained point is at or before ${selector}`);
    return point;
  }
  const point = newest((candidate) => candidate.id === selector);
  if (point === undefined)
    throw new JournalUsageError(`recovery point "${selector}" is not in the journal (list them with "points")`);
  return point;
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

/** Where the journal is: a local directory, or a running master target's RecoveryPoints service. */
interface TargetOptions {
  journal?: string;
  replica?: string;
  masterTarget?: string;
  machine?: string;
  ca?: string;
  cert?: string;
  key?: string;
}

interface Remote {
  client: RecoveryPointsClient;
  machineId: string;
}

function withTarget(command: Command, local: "journal" | "journal and replica"): Command {
  command.option("--journal <dir>", "local mode: the replica's undo journal directory (master target stopped)");
  if (local === "journal and replica") command.option("--replica <path>", "local mode: the replica directory or image");
  return command
    .option("--master-target <address>", "remote mode: host:port of a running master target")
    .option("--machine <id>", "remote mode: the machine whose replica is meant")
    .option("--ca <file>", "remote mode: PEM CA certificate")
    .option("--cert <file>", "remote mode: PEM client certificate (common name ksr-operator)")
    .option("--key <file>", "remote mode: PEM private key");
}

/** Runs remote work against the master target, or local work on the journal directory. */
async function onTarget<T>(
  options: TargetOptions,
  needsReplica: boolean,
  remoteWork: (remote: Remote) => Promise<T>,
  localWork: (journalDirectory: string, replica: string) => Promise<T>,
): Promise<T> {
  if (options.masterTarget === undefined) {
    if (options.journal === undefined || (needsReplica && options.replica === undefined))
      throw new JournalUsageError(
        `give --master-target (remote) or --journal${needsReplica ? " and --replica" : ""} (local)`,
      );
    return localWork(options.journal, resolve(options.replica ?? "."));
  }
  if (options.journal !== undefined || options.replica !== undefined)
    throw new JournalUsageError("--master-target cannot be combined with --journal or --replica");
  const { machine, ca, cert, key } = options;
  if (machine === undefined || ca === undefined || cert === undefined || key === undefined)
    throw new JournalUsageError("--master-target needs --machine, --ca, --cert and --key");
  const client = await connectRecoveryPoints(options.masterTarget, {
    ca: resolve(ca),
    cert: resolve(cert),
    key: resolve(key),
  });
  try {
    return await remoteWork({ client, machineId: machine });
  } catch (error) {
    const details = (error as { details?: unknown }).details;
    throw typeof details === "string" ? new JournalUsageError(details) : error;
  } finally {
    client.close();
  }
}

async function remotePoints(remote: Remote): Promise<RecoveryPoint[]> {
  const reply = await listPoints(remote.client, remote.machineId);
  if (reply.pendingRollback !== "")
    report(`an interrupted rollback to "${reply.pendingRollback}" must be finished (run rollback to it again)`);
  return pointsOf(reply.points);
}

function printPoints(points: readonly RecoveryPoint[], size: JournalSize, json: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify({ points, size }, null, 2)}\n`);
    return;
  }
  for (const point of points) process.stdout.write(`${describePoint(point)}\n`);
  process.stdout.write(
    `${points.length} points; journal ${size.segmentBytes} bytes in ${size.segments} segments + ${size.objectBytes} bytes of moved entries\n`,
  );
}

function pointsCommand(): Command {
  return withTarget(new Command("points"), "journal")
    .description("list the retained recovery points (oldest first) and the journal's size")
    .option("--json", "print JSON instead of text")
    .action(async (options: TargetOptions & { json?: boolean }) => {
      await onTarget(
        options,
        false,
        async (remote) => {
          const reply = await listPoints(remote.client, remote.machineId);
          const points = pointsOf(reply.points);
          printPoints(points, { ...emptyUsage, ...reply.usage, points: points.length }, options.json === true);
        },
        (directory) =>
          withJournal(directory, true, async (journal) => {
            printPoints(journal.points(), await journal.size(), options.json === true);
          }),
      );
    });
}

const emptyUsage = { segmentBytes: 0, objectBytes: 0, segments: 0 };

function hydrateCommand(): Command {
  return withTarget(new Command("hydrate"), "journal and replica")
    .description("write a recovery point into a new directory or image; the replica is not changed (resumable)")
    .requiredOption("--point <selector>", pointHelp)
    .requiredOption("--dest <path>", "a new (or empty) directory, or a new image file path")
    .option("--progress <file>", "remote mode: keep the resume cursor here (default DEST.ksr-hydrate-stream.json)")
    .action(async (options: TargetOptions & { point: string; dest: string; progress?: string }) => {
      const destination = resolve(options.dest);
      const progressPath = options.progress === undefined ? undefined : resolve(options.progress);
      await onTarget(
        options,
        true,
        async (remote) => {
          const point = selectPoint(await remotePoints(remote), options.point);
          report(`hydrating ${describePoint(point)} from ${options.masterTarget ?? ""}`);
          await hydrateRemote(remote.client, remote.machineId, point, destination, {
            onProgress: report,
            ...(progressPath === undefined ? {} : { progressPath }),
          });
        },
        (directory, replica) =>
          withJournal(directory, false, async (journal) => {
            const point = selectPoint(journal.points(), options.point);
            report(`hydrating ${describePoint(point)}`);
            await hydrate(journal, replica, point, destination, { onProgress: report });
          }),
      );
    });
}

/** The points a rollback to `point` discards, refused unless confirmed. */
function confirmRollback(points: readonly RecoveryPoint[], point: RecoveryPoint, confirmed: boolean): void {
  const newer = points.filter((candidate) => candidate.seq > point.seq).length;
  if (!confirmed)
    throw new JournalUsageError(`rolling back to ${point.id} discards ${newer} newer points; add --yes to confirm`);
  report(`rolling back to ${describePoint(point)}`);
}

function rollbackCommand(): Command {
  return withTarget(new Command("rollback"), "journal and replica")
    .description("turn the replica itself into a recovery point, dropping every newer point (resumable)")
    .requiredOption("--point <selector>", pointHelp)
    .option("--yes", "confirm: points newer than the chosen one are discarded")
    .action(async (options: TargetOptions & { point: string; yes?: boolean }) => {
      await onTarget(
        options,
        true,
        async (remote) => {
          const points = await remotePoints(remote);
          const point = selectPoint(points, options.point);
          confirmRollback(points, point, options.yes === true);
          const reply = await rollbackTo(remote.client, remote.machineId, point);
          report(
            `replica of ${remote.machineId} rolled back to point ${point.id}; ${reply.discardedPoints} newer points discarded; replication resumes after the agent resynchronised`,
          );
        },
        (directory, replica) =>
          withJournal(directory, false, async (journal) => {
            const point = selectPoint(journal.points(), options.point);
            confirmRollback(journal.points(), point, options.yes === true);
            await rollback(journal, replica, point, { onProgress: report });
          }),
      );
    });
}

/** "30s", "5m", "24h", "15d" → milliseconds. */
export function parseRetention(value: string, flag = "--retention"): number {
  const ms = durationMs(value);
  if (ms === undefined)
    throw new JournalUsageError(`${flag} "${value}": expected a positive duration like 30s, 5m, 24h or 15d`);
  return ms;
}

function pruneCommand(): Command {
  return withTarget(new Command("prune"), "journal")
    .description("drop points older than the retention window, with the journal only they needed")
    .requiredOption("--retention <duration>", "keep points this recent: 30s, 5m, 24h, 15d ... (remote: 1h to 720h)")
    .action(async (options: TargetOptions & { retention: string }) => {
      const retentionMs = parseRetention(options.retention);
      const line = (removed: number, floor: RecoveryPoint | undefined, bytes: number) =>
        `removed ${removed} points; oldest kept ${floor === undefined ? "none" : describePoint(floor)}; journal ${bytes} bytes\n`;
      await onTarget(
        options,
        false,
        async (remote) => {
          const reply = await prunePoints(remote.client, remote.machineId, retentionMs);
          const [floor] = pointsOf(reply.oldestKept === undefined ? [] : [reply.oldestKept]);
          const usage = { ...emptyUsage, ...reply.usage };
          process.stdout.write(line(reply.removed.length, floor, usage.segmentBytes + usage.objectBytes));
        },
        (directory) =>
          withJournal(directory, false, async (journal) => {
            const { removedPoints, floor } = await journal.prune(retentionMs, Date.now());
            const size = await journal.size();
            process.stdout.write(line(removedPoints.length, floor ?? undefined, size.segmentBytes + size.objectBytes));
          }),
      );
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
