// A frame sealer worker thread: seals and opens frames with the key it was started with. Every
// failure goes back as its message only (never the key or the payload).
import { parentPort, workerData } from "node:worker_threads";
import { openFrame, sealFrame } from "./frame-codec.js";
import { fromPayload, toPayload, type SealerJob, type SealerResult } from "./frame-sealer.js";

const port = parentPort;
if (port === null) throw new Error("frame-sealer-worker runs only as a worker thread");
const key = Buffer.from((workerData as { key: Uint8Array }).key);

function run(job: SealerJob, transfer: ArrayBuffer[]): SealerResult {
  if (job.kind === "seal") {
    const frame = sealFrame(key, job.codec, job.range, fromPayload(job.batch));
    return { id: job.id, kind: "sealed", sealed: toPayload(frame.sealed, transfer) };
  }
  const batch = openFrame(key, { ...job.frame, sealed: fromPayload(job.sealed) });
  return { id: job.id, kind: "opened", batch: toPayload(batch, transfer) };
}

port.on("message", (job: SealerJob) => {
  const transfer: ArrayBuffer[] = [];
  let result: SealerResult;
  try {
    result = run(job, transfer);
  } catch (error) {
    result = { id: job.id, kind: "failed", message: error instanceof Error ? error.message : String(error) };
    transfer.length = 0;
  }
  port.postMessage(result, transfer);
});
