// The operator's side of the replicators' control API (mutual TLS, common name ksr-operator): the
// process server's Control.Status, the master target's RecoveryPoints.ListPoints and Rollback and the agent's
// Barrier.Cut. One channel per address, reused across reconciles, closed when the operator stops.
import type { ChannelCredentials } from "@grpc/grpc-js";
import {
  BarrierClient,
  Consistency,
  ControlClient,
  RecoveryPointsClient,
  type ControlStatus,
  type CutReply,
  type ListPointsReply,
  type RollbackReply,
} from "../../gen/ksr/replication/v1/replication.js";
import { callWithin } from "../../replicator/grpc-util.js";
import { grpcOptions } from "../../replicator/tls.js";

/** Control calls are small; a replicator that does not answer within this is reported unreachable. */
const callTimeoutMs = 5_000;
/** A rollback moves entries back and restores blocks: as long as the journal newer than the point is large. */
const rollbackTimeoutMs = 10 * 60_000;

/** Where a replicator is reached: the address to dial and the name its certificate carries. */
export interface PeerAddress {
  address: string;
  serverName: string;
}

export class ReplicatorClients {
  private readonly control = new Map<string, ControlClient>();
  private readonly points = new Map<string, RecoveryPointsClient>();
  private readonly barriers = new Map<string, BarrierClient>();

  constructor(private readonly credentials: () => Promise<ChannelCredentials>) {}

  private async client<T extends { close(): void }>(
    cache: Map<string, T>,
    peer: PeerAddress,
    make: (address: string, credentials: ChannelCredentials, options: object) => T,
  ): Promise<T> {
    const key = `${peer.address}|${peer.serverName}`;
    let client = cache.get(key);
    if (client === undefined) {
      client = make(peer.address, await this.credentials(), {
        ...grpcOptions,
        // The certificate names the Service; the address may be an endpoint's IP.
        "grpc.ssl_target_name_override": peer.serverName,
        "grpc.default_authority": peer.serverName,
      });
      cache.set(key, client);
    }
    return client;
  }

  async controlStatus(peer: PeerAddress, machineId: string): Promise<ControlStatus> {
    const client = await this.client(this.control, peer, (a, c, o) => new ControlClient(a, c, o));
    return callWithin(client.status.bind(client), { machineId }, callTimeoutMs);
  }

  async listPoints(peer: PeerAddress, machineId: string): Promise<ListPointsReply> {
    const client = await this.client(this.points, peer, (a, c, o) => new RecoveryPointsClient(a, c, o));
    return callWithin(client.listPoints.bind(client), { machineId }, callTimeoutMs);
  }

  /** Turns a replica into one of its points in place (a failover); points newer than it are discarded. */
  async rollback(peer: PeerAddress, machineId: string, pointId: string, pointSeq: number): Promise<RollbackReply> {
    const client = await this.client(this.points, peer, (a, c, o) => new RecoveryPointsClient(a, c, o));
    return callWithin(client.rollback.bind(client), { machineId, pointId, pointSeq }, rollbackTimeoutMs);
  }

  /** One point of one stream now; answers once the master target applied its marker. */
  async cut(peer: PeerAddress, consistency: "app" | "crash", timeoutMs: number): Promise<CutReply> {
    const client = await this.client(this.barriers, peer, (a, c, o) => new BarrierClient(a, c, o));
    const requested = consistency === "app" ? Consistency.CONSISTENCY_APP : Consistency.CONSISTENCY_CRASH;
    return callWithin(client.cut.bind(client), { requested }, timeoutMs);
  }

  /** Drops the channels to a replicator that is gone (by the name its certificate carries). */
  forgetServer(serverName: string): void {
    for (const cache of [this.control, this.points, this.barriers] as Map<string, { close(): void }>[])
      for (const [key, client] of cache)
        if (key.endsWith(`|${serverName}`)) {
          client.close();
          cache.delete(key);
        }
  }

  close(): void {
    for (const cache of [this.control, this.points, this.barriers] as Map<string, { close(): void }>[]) {
      for (const client of cache.values()) client.close();
      cache.clear();
    }
  }
}
