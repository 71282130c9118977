// The operator's side of the replicators' control API (mutual TLS, common name ksr-operator): the
// process server's Control.Status, the master target's RecoveryPoints.ListPoints, Rollback and Prune (release), and
// the agent's Barrier service (the operator is the coordinator of the points it cuts). One channel
// per address, reused across reconciles, closed when the operator stops.
import type { ChannelCredentials, VerifyOptions } from "@grpc/grpc-js";
import {
  BarrierClient,
  ControlClient,
  RecoveryPointsClient,
  type ControlStatus,
  type ListPointsReply,
  type PruneReply,
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

  /**
   * credentials() follows the operator's certificate across renewals (OperatorIdentity);
   * refresh(), called before every request, looks at it again when due, so connections made
   * later (a replicator restarted, a keepalive failed) present the renewed certificate.
   */
  constructor(
    private readonly credentials: (verify?: VerifyOptions) => Promise<ChannelCredentials>,
    private readonly refresh: () => Promise<void> = () => Promise.resolve(),
  ) {}

  private async client<T extends { close(): void }>(
    cache: Map<string, T>,
    peer: PeerAddress,
    make: (address: string, credentials: ChannelCredentials, options: object) => T,
  ): Promise<T> {
    await this.refresh().catch(() => undefined); // the certificate loaded before stays in use
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

  /** Orders a resync of one stream now (the process server drops its cache for it). */
  async requestResync(peer: PeerAddress, machineId: string): Promise<void> {
    const client = await this.client(this.control, peer, (a, c, o) => new ControlClient(a, c, o));
    await callWithin(client.requestResync.bind(client), { machineId }, callTimeoutMs);
  }

  /** Holds (or lets go) a stream's required resyncs at the process server. */
  async holdResync(peer: PeerAddress, machineId: string, held: boolean): Promise<void> {
    const client = await this.client(this.control, peer, (a, c, o) => new ControlClient(a, c, o));
    await callWithin(client.holdResync.bind(client), { machineId, held }, callTimeoutMs);
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

  /** Releases every point and the journal of a stream whose epoch ended (PruneRequest.release_all). */
  async releaseAll(peer: PeerAddress, machineId: string): Promise<PruneReply> {
    const client = await this.client(this.points, peer, (a, c, o) => new RecoveryPointsClient(a, c, o));
    return callWithin(client.prune.bind(client), { machineId, retentionMs: 0, releaseAll: true }, rollbackTimeoutMs);
  }

  /**
   * An agent's Barrier service at a pod address. Agents' certificates name no host, only the one
   * stream they push (common name ksr-agent:ID), so that is what the server must present.
   */
  async barrier(address: string, commonName: string): Promise<BarrierClient> {
    await this.refresh().catch(() => undefined);
    const key = `${address}|${commonName}`;
    let client = this.barriers.get(key);
    if (client === undefined) {
      const credentials = await this.credentials({
        checkServerIdentity: (_host, certificate) => {
          const presented = [certificate.subject.CN].flat().join(",");
          return presented === commonName
            ? undefined
            : new Error(`the agent at ${address} is ${presented}, not ${commonName}`);
        },
      });
      client = new BarrierClient(address, credentials, grpcOptions);
      this.barriers.set(key, client);
    }
    return client;
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
