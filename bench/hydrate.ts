// `npm run bench -- hydrate`: a recovery point hydrated over gRPC (mTLS) from a master target
// process into a new directory, against `cp -a` of the same data in the same run.
// KSR_BENCH_SCALE (default 1) scales the 512 MiB volume.
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import {
  ApplyClient,
  ChangeBatch,
  Codec,
  Consistency,
  type ApplyAck,
  type Change,
} from "../src/gen/ksr/replication/v1/replication.js";
import { sealFrame } from "../src/replicator/frame-codec.js";
import { batchFormatVersion } from "../src/replicator/master-target/machine-applier.js";
import {
  connectRecoveryPoints,
  hydrateRemote,
  listPoints,
  pointsOf,
} from "../src/replicator/recovery-points-client.js";
import {
  clientCredentials,
  grpcOptions,
  masterTargetCommonName,
  operatorCommonName,
  processServerCommonName,
  writeLoopbackPki,
  type TlsFiles,
} from "../src/replicator/tls.js";
import { packageRoot } from "../src/util/package-root.js";
import { blockBytes, fileBytes, mib, populate, timed, treeDigest } from "./journal.js";

const machineId = "bench";

function identity(identities: Map<string, TlsFiles>, name: string): TlsFiles {
  const files = identities.get(name);
  if (files === undefined) throw new Error(`no identity ${name}`);
  return files;
}

async function startMasterTarget(
  work: string,
  tls: TlsFiles,
  replica: string,
): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(
    process.execPath,
    [
      join(packageRoot, "bin", "ksr.js"),
      "replicator",
      "master-target",
      ...["--ca", tls.ca, "--cert", tls.cert, "--key", tls.key],
      ...["--listen", "localhost:0", "--encryption-key", join(work, "key"), "--state", join(work, "state")],
      ...["--replica", `${machineId}=${replica}`],
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout }).on("line", (line) => {
      const { listening } = JSON.parse(line) as { listening?: number };
      if (listening !== undefined) resolve(listening);
    });
    child.once("exit", (code) => {
      reject(new Error(`master target exited with ${String(code)}`));
    });
  });
  return { child, port };
}

/** Sends changes as the process server would and waits until the master target applied them. */
async function applyChanges(client: ApplyClient, key: Buffer, changes: readonly Change[]): Promise<void> {
  const call = client.apply();
  const lastSeq = changes.at(-1)?.seq ?? 0;
  const applied = new Promise<void>((resolve, reject) => {
    call.on("data", (ack: ApplyAck) => {
      if (ack.appliedSeq >= lastSeq) resolve();
    });
    call.on("error", reject);
  });
  for (let start = 0; start < changes.length; start += 64) {
    const batch = changes.slice(start, start + 64);
    const encoded = Buffer.from(
      ChangeBatch.encode({ formatVersion: batchFormatVersion, machineId, changes: batch }).finish(),
    );
    const range = { machineId, firstSeq: batch[0]?.seq ?? 0, lastSeq: batch.at(-1)?.seq ?? 0 };
    call.write(sealFrame(key, Codec.CODEC_NONE, range, encoded));
  }
  await applied;
  call.end();
}

export async function run(): Promise<void> {
  const scale = Number(process.env.KSR_BENCH_SCALE ?? "1");
  const files = Math.max(1, Math.round(32 * scale));
  const volumeBytes = files * fileBytes;
  const work = await mkdtemp(join(tmpdir(), "ksr-bench-hydrate-"));
  const replica = join(work, "replica");
  let masterTarget: ChildProcess | undefined;
  try {
    const identities = await writeLoopbackPki(join(work, "pki"), [
      masterTargetCommonName,
      processServerCommonName,
      operatorCommonName,
    ]);
    const key = randomBytes(32);
    await writeFile(join(work, "key"), key.toString("hex"), { mode: 0o600 });
    await populate(replica, files);
    execFileSync("sync");
    const pointDigest = treeDigest(replica);
    const started = await startMasterTarget(work, identity(identities, masterTargetCommonName), replica);
    masterTarget = started.child;
    const address = `localhost:${started.port}`;
    const apply = new ApplyClient(
      address,
      await clientCredentials(identity(identities, processServerCommonName)),
      grpcOptions,
    );
    const marker = {
      id: "p1",
      consistency: Consistency.CONSISTENCY_CRASH,
      timeUnixMs: Date.now(),
      consistencyGroup: "",
    };
    const changes: Change[] = [{ seq: 1, op: { $case: "marker", value: marker } }];
    // 1% of the volume changes after the point, so the hydration has something to undo.
    for (let changed = 0; changed < volumeBytes / 100; changed += blockBytes) {
      const path = `f${String(Math.floor(Math.random() * files)).padStart(3, "0")}`;
      const offset = Math.floor(Math.random() * (fileBytes / blockBytes)) * blockBytes;
      changes.push({
        seq: changes.length + 1,
        op: { $case: "write", value: { path, offset, data: randomBytes(blockBytes) } },
      });
    }
    await applyChanges(apply, key, changes);
    apply.close();
    const client = await connectRecoveryPoints(address, identity(identities, operatorCommonName));
    const [point] = pointsOf((await listPoints(client, machineId)).points);
    if (point === undefined) throw new Error("the master target recorded no point");

    // Alternate the two, twice, and keep each one's best time (the write cache favours the first).
    const copySeconds: number[] = [];
    const hydrateSeconds: number[] = [];
    let identical = true;
    for (let attempt = 0; attempt < 2; attempt++) {
      const copyTarget = join(work, "cp");
      copySeconds.push(
        (await timed(() => execFileSync("sh", ["-c", `cp -a "${replica}" "${copyTarget}" && sync`]))).seconds,
      );
      await rm(copyTarget, { recursive: true });
      execFileSync("sync");
      const destination = join(work, "hydrated");
      const hydrated = await timed(async () => {
        await hydrateRemote(client, machineId, point, destination);
        execFileSync("sync");
      });
      hydrateSeconds.push(hydrated.seconds);
      identical &&= treeDigest(destination) === pointDigest;
      await rm(destination, { recursive: true });
    }
    client.close();
    const seconds = Math.min(...hydrateSeconds);
    const baselineSeconds = Math.min(...copySeconds);
    process.stdout.write(
      `${JSON.stringify({
        scenario: `hydrate a ${(volumeBytes / mib).toFixed(0)} MiB point over gRPC+mTLS from a master target process (1% changed since)`,
        seconds,
        mibPerSecond: volumeBytes / mib / seconds,
        baseline: "cp -a + sync of the replica",
        baselineSeconds,
        ratio: baselineSeconds / seconds,
        matchesPoint: String(identical),
      })}\n`,
    );
  } finally {
    if (masterTarget !== undefined && masterTarget.exitCode === null) {
      const exited = new Promise((resolve) => masterTarget?.once("exit", resolve));
      masterTarget.kill("SIGTERM");
      await exited;
    }
    await rm(work, { recursive: true, force: true });
  }
}
