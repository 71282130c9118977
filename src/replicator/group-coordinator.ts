// A consistency group's coordinator: drives every member agent's Barrier service (mTLS, common
// name ksr-coordinator) through one BarrierCoordinator cut and writes committed group points to
// the group point log. A member that cannot be reached, or does not reach the barrier in time,
// means no group point; every member that was held is released either way.
import { BarrierClient, Consistency, type HookStepResult } from "../gen/ksr/replication/v1/replication.js";
import { callWithin, type UnaryMethod } from "./grpc-util.js";
import type { MarkerOp } from "./journal/change.js";
import {
  BarrierCoordinator,
  GroupPointLog,
  type GroupCutResult,
  type GroupMember,
} from "./journal/consistency-group.js";
import { consistencyFromWire, type PointConsistency } from "./journal/point.js";
import { checkMachineId } from "./machine-id.js";
import { clientCredentials, grpcOptions, type TlsFiles } from "./tls.js";

export interface MemberAddress {
  machineId: string;
  address: string;
}

/** `--member ID=HOST:PORT` */
export function parseMemberFlag(value: string): MemberAddress {
  const separator = value.indexOf("=");
  const machineId = value.slice(0, separator);
  const address = value.slice(separator + 1);
  if (separator <= 0 || !/^[^:\s]+:\d{1,5}$/.test(address))
    throw new Error(`--member "${value}": expected MACHINE_ID=HOST:PORT (the agent's --barrier-listen address)`);
  checkMachineId(machineId);
  return { machineId, address };
}

export interface CoordinatorLog {
  warn(message: string): void;
}

/** One member agent reached over its Barrier service. */
export class RemoteMember implements GroupMember {
  readonly machineId: string;
  private readonly address: string;

  constructor(
    member: MemberAddress,
    private readonly client: BarrierClient,
    private readonly requested: PointConsistency,
    private readonly timing: { callTimeoutMs: number; holdTimeoutMs: number },
    private readonly log: CoordinatorLog,
    /** The caller quiesced the members' applications itself (the operator's exec hooks). */
    private readonly quiescedByCaller = false,
  ) {
    this.machineId = member.machineId;
    this.address = member.address;
  }

  /** One Barrier call within the call timeout. Failures name the member: the coordinator reports several at once. */
  private async call<Request, Reply>(
    what: string,
    method: UnaryMethod<Request, Reply>,
    request: NoInfer<Request>,
  ): Promise<Reply> {
    try {
      return await callWithin(method, request, this.timing.callTimeoutMs);
    } catch (error) {
      throw new Error(`${this.machineId} at ${this.address}: ${what}: ${(error as Error).message}`);
    }
  }

  private reportHooks(cutId: string, hooks: readonly HookStepResult[]): void {
    for (const step of hooks)
      if (!step.ok)
        this.log.warn(
          `cut ${cutId}: ${this.machineId} quiesce hook "${step.hook}" ${step.phase} failed: ${step.error}`,
        );
  }

  async hold(cutId: string): Promise<void> {
    const reply = await this.call("hold", this.client.hold.bind(this.client), {
      cutId,
      requested: this.requested === "app" ? Consistency.CONSISTENCY_APP : Consistency.CONSISTENCY_CRASH,
      holdTimeoutMs: this.timing.holdTimeoutMs,
      quiescedByCaller: this.quiescedByCaller,
    });
    this.reportHooks(cutId, reply.hooks);
    if (reply.machineId !== this.machineId)
      throw new Error(`the agent at ${this.machineId}'s address is machine ${reply.machineId}`);
  }

  async mark(marker: MarkerOp): Promise<{ seq: number; consistency: PointConsistency }> {
    const reply = await this.call("mark", this.client.mark.bind(this.client), { cutId: marker.id, marker });
    return { seq: reply.seq, consistency: consistencyFromWire(reply.consistency) };
  }

  async release(cutId: string): Promise<void> {
    const reply = await this.call("release", this.client.release.bind(this.client), { cutId });
    this.reportHooks(cutId, reply.hooks);
  }
}

export interface GroupCoordinatorOptions {
  group: string;
  members: readonly MemberAddress[];
  tls: TlsFiles;
  /** The group point log (one checksummed JSON line per committed point). */
  logFile: string;
  requested: PointConsistency;
  /** Each phase (hold, mark) must finish within this for every member. */
  phaseTimeoutMs: number;
  log: CoordinatorLog;
}

export class GroupCoordinator {
  private readonly coordinator: BarrierCoordinator;

  private constructor(
    private readonly options: GroupCoordinatorOptions,
    private readonly clients: BarrierClient[],
    private readonly members: GroupMember[],
  ) {
    this.coordinator = new BarrierCoordinator(new GroupPointLog(options.logFile), {
      phaseTimeoutMs: options.phaseTimeoutMs,
    });
  }

  static async create(options: GroupCoordinatorOptions): Promise<GroupCoordinator> {
    const ids = options.members.map((member) => member.machineId);
    if (ids.length === 0) throw new Error("give at least one --member");
    if (new Set(ids).size !== ids.length) throw new Error("a machine is given twice as --member");
    const credentials = await clientCredentials(options.tls);
    // Hold, mark and release each have a phase to finish; a held agent lets go on its own after
    // all three could have, so a coordinator that dies mid-cut never freezes replication.
    const timing = { callTimeoutMs: options.phaseTimeoutMs, holdTimeoutMs: 3 * options.phaseTimeoutMs };
    const connected = options.members.map((address) => {
      const client = new BarrierClient(address.address, credentials, grpcOptions);
      return { client, member: new RemoteMember(address, client, options.requested, timing, options.log) };
    });
    return new GroupCoordinator(
      options,
      connected.map(({ client }) => client),
      connected.map(({ member }) => member),
    );
  }

  /** One group cut now. */
  cut(): Promise<GroupCutResult> {
    return this.coordinator.cut(this.options.group, this.members, this.options.requested);
  }

  close(): void {
    for (const client of this.clients) client.close();
  }
}
