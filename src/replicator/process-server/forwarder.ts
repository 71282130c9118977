// Sends one machine's cached frames to the master target in seq order, with a window of
// unacknowledged frames and a bandwidth limit; reconnects after outages and resumes from the
// seq the master target reports as applied.
import { status, type ServiceError } from "@grpc/grpc-js";
import type { ApplyAck, ApplyClient, Frame } from "../../gen/ksr/replication/v1/replication.js";
import { callWithin } from "../grpc-util.js";
import { sleep } from "../signal.js";
import type { BandwidthLimit } from "./bandwidth.js";
import type { MachineState } from "./machine-state.js";

const windowFrames = 16;
const windowBytes = 64 * 1024 * 1024;
const retryMs = 500;

export interface ForwarderLog {
  warn(message: string): void;
}

export class Forwarder {
  private stopped = false;
  private running: Promise<void> | undefined;

  constructor(
    private readonly machine: MachineState,
    private readonly client: ApplyClient,
    private readonly bandwidth: BandwidthLimit,
    private readonly log: ForwarderLog,
  ) {}

  /** Read through a method: stop() flips it while loops await. */
  private isStopped(): boolean {
    return this.stopped;
  }

  start(): void {
    this.running ??= this.loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.machine.changed.notify();
    await this.running;
  }

  private async loop(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      try {
        await this.session();
      } catch (error) {
        const wasReachable = this.machine.masterTargetReachable;
        this.machine.masterTargetReachable = false;
        failures = wasReachable ? 1 : failures + 1;
        if ((error as ServiceError).code === status.INVALID_ARGUMENT) {
          this.log.warn(
            `master target rejected a frame of ${this.machine.machineId}: ${(error as Error).message}; ordering a resync`,
          );
          await this.machine.dropForResync();
        } else if (!this.isStopped() && (wasReachable || failures % 20 === 5)) {
          // A master target still booting is normal; say so when it was lost or stays away (~2.5 s).
          this.log.warn(`master target unavailable for ${this.machine.machineId}: ${(error as Error).message}`);
        }
      }
      if (!this.isStopped()) await sleep(retryMs);
    }
  }

  private async session(): Promise<void> {
    const { machineId } = this.machine;
    const reply = await callWithin(this.client.status.bind(this.client), { machineId }, 5000);
    this.acknowledged(reply.appliedSeq);
    const call = this.client.apply();
    const inFlight: { lastSeq: number; bytes: number }[] = [];
    const outcome: { failure?: Error } = {};
    const failed = (): boolean => outcome.failure !== undefined;
    call.on("data", (ack: ApplyAck) => {
      while (inFlight.length > 0 && (inFlight[0]?.lastSeq ?? Infinity) <= ack.appliedSeq) inFlight.shift();
      this.acknowledged(ack.appliedSeq);
    });
    call.on("error", (error: Error) => {
      outcome.failure = error;
      this.machine.changed.notify();
    });
    call.on("end", () => {
      outcome.failure ??= new Error("master target closed the apply stream");
      this.machine.changed.notify();
    });
    let sentSeq = reply.appliedSeq;
    try {
      while (!this.isStopped() && !failed()) {
        const inFlightBytes = inFlight.reduce((sum, frame) => sum + frame.bytes, 0);
        if (
          inFlight.length >= windowFrames ||
          inFlightBytes >= windowBytes ||
          !this.machine.cache.hasFramesAfter(sentSeq)
        ) {
          await this.machine.changed.wait(1000);
          continue;
        }
        for await (const frame of this.machine.cache.framesAfter(sentSeq)) {
          await this.bandwidth.take(frame.sealed.length);
          if (failed() || this.isStopped()) break;
          call.write(this.withGapFlag(frame));
          sentSeq = frame.lastSeq;
          inFlight.push({ lastSeq: frame.lastSeq, bytes: frame.sealed.length });
          if (inFlight.length >= windowFrames || inFlight.reduce((sum, f) => sum + f.bytes, 0) >= windowBytes) break;
        }
      }
    } finally {
      call.end();
    }
    if (outcome.failure !== undefined) throw outcome.failure;
  }

  private withGapFlag(frame: Frame): Frame {
    return frame.firstSeq === this.machine.gapAt.value ? { ...frame, afterGap: true } : frame;
  }

  private acknowledged(appliedSeq: number): void {
    this.machine.appliedSeq = appliedSeq;
    this.machine.masterTargetReachable = true;
    void this.machine.cache.release(appliedSeq).catch((error: unknown) => {
      this.log.warn(`could not release cache of ${this.machine.machineId}: ${(error as Error).message}`);
    });
    this.machine.changed.notify();
  }
}
