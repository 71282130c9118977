// Observations of a machine's replicators for its status: per volume, the process server's
// Control.Status and the master target's points. A replicator that cannot be asked yields no
// observation (status says so), never an invented one.
import type { ControlStatus, ListPointsReply, PointInfo } from "../../gen/ksr/replication/v1/replication.js";
import type { Logger } from "../../runtime/index.js";
import type { ReplicatorClients, PeerAddress } from "./replicator-clients.js";
import type { VolumeObservation } from "./status.js";
import type { ProtectedVolume } from "./workload.js";

interface Sample {
  receivedBytes: number;
  at: number;
}

/** Recent throughput per stream, from the process server's received-bytes counter. */
export class ThroughputTracker {
  private readonly samples = new Map<string, Sample>();

  /** Bytes per second since the previous sample of the same stream; the first sample has none. */
  observe(key: string, receivedBytes: number, now: number): { rate?: number; delta: number } {
    const previous = this.samples.get(key);
    this.samples.set(key, { receivedBytes, at: now });
    if (previous === undefined || receivedBytes < previous.receivedBytes) return { delta: receivedBytes };
    const seconds = (now - previous.at) / 1000;
    const delta = receivedBytes - previous.receivedBytes;
    return { delta, ...(seconds > 0 ? { rate: delta / seconds } : {}) };
  }

  forget(keyPrefix: string): void {
    for (const key of this.samples.keys()) if (key.startsWith(keyPrefix)) this.samples.delete(key);
  }
}

/** The machine's part of its master target's journal, when every volume's journal answered. */
export interface JournalObservation {
  /** Segments plus entries moved out of the replica, over the machine's volumes. */
  usedBytes: number;
  /** The retention window the master target applies. */
  retentionMs: number;
}

export interface ObservedVolumes {
  volumes: VolumeObservation[];
  /** Bytes received by the process server since the last observation, over all volumes. */
  newBytes: number;
  journal?: JournalObservation;
}

export async function observeVolumes(options: {
  volumes: readonly ProtectedVolume[];
  capacities: ReadonlyMap<string, number>;
  processServer: PeerAddress;
  masterTarget: PeerAddress;
  clients: ReplicatorClients;
  throughput: ThroughputTracker;
  machineKey: string;
  now: number;
  log: Logger;
}): Promise<ObservedVolumes> {
  const { clients, processServer, masterTarget, log } = options;
  let newBytes = 0;
  const journals: ListPointsReply[] = [];
  const volumes = await Promise.all(
    options.volumes.map(async (volume): Promise<VolumeObservation> => {
      const [control, points] = await Promise.all([
        clients.controlStatus(processServer, volume.machineId).catch((error: unknown): undefined => {
          log.debug({ err: String(error), stream: volume.machineId }, "process server not answering");
          return undefined;
        }),
        clients.listPoints(masterTarget, volume.machineId).then(
          (reply): readonly PointInfo[] => {
            journals.push(reply);
            return reply.points;
          },
          (error: unknown): undefined => {
            log.debug({ err: String(error), stream: volume.machineId }, "master target not answering");
            return undefined;
          },
        ),
      ]);
      let throughput: number | undefined;
      if (control !== undefined) {
        const sample = options.throughput.observe(
          `${options.machineKey}/${volume.machineId}`,
          control.receivedBytes,
          options.now,
        );
        newBytes += sample.delta;
        throughput = sample.rate;
      }
      const capacity = options.capacities.get(volume.claimName);
      return {
        statusName: volume.statusName,
        claimName: volume.claimName,
        replicaClaimName: volume.replicaClaimName,
        ...(capacity === undefined ? {} : { capacityBytes: capacity }),
        ...(control === undefined ? {} : { control: control satisfies ControlStatus }),
        ...(points === undefined ? {} : { points }),
        ...(throughput === undefined ? {} : { throughputBytesPerSecond: throughput }),
      };
    }),
  );
  const answered = journals;
  const journal =
    answered.length === options.volumes.length && answered.length > 0
      ? {
          usedBytes: answered.reduce(
            (sum, reply) => sum + (reply.usage?.segmentBytes ?? 0) + (reply.usage?.objectBytes ?? 0),
            0,
          ),
          retentionMs: Math.max(...answered.map((reply) => reply.retentionMs)),
        }
      : undefined;
  return { volumes, newBytes, ...(journal === undefined ? {} : { journal }) };
}
