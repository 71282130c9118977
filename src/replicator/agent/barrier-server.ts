// The agent's Barrier service: a consistency group's coordinator (or the operator) holds, marks
// and releases this machine's stream for a group point, or asks for one point of its own (Cut).
import { status, type sendUnaryData } from "@grpc/grpc-js";
import {
  BarrierService,
  Consistency,
  type BarrierServer,
  type HookStepResult,
} from "../../gen/ksr/replication/v1/replication.js";
import { consistencyToWire, type PointConsistency } from "../journal/point.js";
import type { HookStep } from "../journal/quiesce.js";
import {
  answerUnary,
  shutdownServer,
  startServer,
  toStatus,
  type RunningServer,
  type StatusError,
} from "../grpc-util.js";
import { requireRole, serverCredentials, type ReplicatorRole, type TlsFiles } from "../tls.js";
import { CutStateError, defaultHoldTimeoutMs, maxHoldTimeoutMs, type PointCutter } from "./point-cutter.js";

const callers: Exclude<ReplicatorRole, "agent">[] = ["coordinator", "operator"];

function asStatus(error: unknown): StatusError {
  if (error instanceof CutStateError) return { code: status.FAILED_PRECONDITION, details: error.message };
  return toStatus(error, (cause) => cause instanceof RangeError);
}

/** Answers a unary call with the work's result, or its error as a status. */
function answer<T>(callback: sendUnaryData<T>, work: () => Promise<T>): void {
  answerUnary(callback, work, asStatus);
}

/** Only APP asks for the quiesce hooks; anything else (crash, unspecified) is an ordinary cut. */
function requested(value: Consistency): PointConsistency {
  return value === Consistency.CONSISTENCY_APP ? "app" : "crash";
}

function stepResults(steps: readonly HookStep[]): HookStepResult[] {
  return steps.map((step) => ({
    hook: step.hook,
    phase: step.phase,
    ok: step.ok,
    durationMs: step.durationMs,
    error: step.error ?? "",
  }));
}

function holdTimeout(requestedMs: number): number {
  if (requestedMs === 0) return defaultHoldTimeoutMs;
  if (requestedMs > maxHoldTimeoutMs) throw new RangeError(`hold_timeout_ms must be at most ${maxHoldTimeoutMs}`);
  return requestedMs;
}

export async function startBarrierServer(options: {
  listen: string;
  tls: TlsFiles;
  machineId: string;
  points: PointCutter;
}): Promise<RunningServer> {
  const { points } = options;
  const barrier: BarrierServer = {
    hold(call, callback) {
      answer(callback, async () => {
        requireRole(call, callers);
        const request = call.request;
        if (request.cutId === "") throw new RangeError("cut_id must not be empty");
        const held = await points.hold(request.cutId, requested(request.requested), {
          timeoutMs: holdTimeout(request.holdTimeoutMs),
          group: true,
          quiescedByCaller: request.quiescedByCaller,
        });
        return {
          machineId: options.machineId,
          consistency: consistencyToWire(held.memberConsistency),
          hooks: stepResults(held.steps),
        };
      });
    },
    mark(call, callback) {
      answer(callback, async () => {
        requireRole(call, callers);
        const { cutId, marker } = call.request;
        if (marker === undefined) throw new RangeError("mark needs a marker");
        const marked = await points.mark(cutId, marker, true);
        return { seq: marked.seq, consistency: consistencyToWire(marked.consistency) };
      });
    },
    release(call, callback) {
      answer(callback, async () => {
        requireRole(call, callers);
        return { hooks: stepResults(await points.release(call.request.cutId)) };
      });
    },
    cut(call, callback) {
      answer(callback, async () => {
        requireRole(call, callers);
        const report = await points.cut(requested(call.request.requested), true);
        return {
          pointId: report.id,
          seq: report.seq,
          consistency: consistencyToWire(report.consistency),
          hooks: stepResults(report.hooks),
        };
      });
    },
  };
  const { server, port } = await startServer(options.listen, await serverCredentials(options.tls), [
    [BarrierService, barrier],
  ]);
  return { port, close: () => shutdownServer(server) };
}
