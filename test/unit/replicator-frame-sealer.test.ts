// The frame sealer pool: frames come back in the order asked for, byte-compatible with sealing on
// the event loop, payloads are transferred rather than copied, one bad frame fails alone, and
// closing rejects what is still waiting.
import { strict as assert } from "node:assert";
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { Codec, PushRequest, type Frame } from "../../src/gen/ksr/replication/v1/replication.js";
import { openFrame, sealFrame } from "../../src/replicator/frame-codec.js";
import {
  createFrameSealer,
  InlineFrameSealer,
  SealerClosed,
  WorkerFrameSealer,
} from "../../src/replicator/frame-sealer.js";
import { decodePushRequest, ownedMessageDecoder } from "../../src/replicator/wire-reader.js";

const key = randomBytes(32);
const codecs = [Codec.CODEC_ZSTD, Codec.CODEC_LZ4, Codec.CODEC_NONE];

/** Compressible but not trivial: runs of a few random bytes. */
const payload = fc
  .tuple(fc.integer({ min: 0, max: 300_000 }), fc.integer({ min: 0, max: 2 ** 31 }))
  .map(([length, seed]) => {
    const bytes = Buffer.alloc(length);
    for (let index = 0, value = seed; index < length; index++) {
      if (index % 64 === 0) value = (value * 1103515245 + 12345) % 2 ** 31;
      bytes[index] = (value >> (index % 24)) & 0xff;
    }
    return bytes;
  });

describe("replicator frame sealer", function () {
  let pool: WorkerFrameSealer;
  beforeEach(() => {
    pool = new WorkerFrameSealer(key, 2);
  });
  afterEach(() => pool.close());

  it("seals many frames at once, in order, each opening to its batch with the inline sealer", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(payload, fc.constantFrom(...codecs)), { minLength: 1, maxLength: 12 }),
        async (jobs) => {
          const originals = jobs.map(([bytes]) => Buffer.from(bytes));
          let seq = 1;
          const frames = await Promise.all(
            jobs.map(([bytes, codec]) => {
              const range = { machineId: "m1", firstSeq: seq, lastSeq: seq + 2 };
              seq += 3;
              return pool.seal(codec, range, bytes);
            }),
          );
          frames.forEach((frame, index) => {
            assert.equal(frame.firstSeq, 1 + index * 3);
            assert.equal(frame.lastSeq, 3 + index * 3);
            assert.equal(frame.codec, jobs[index]?.[1]);
            assert.equal(frame.uncompressedSize, originals[index]?.length);
            assert.deepEqual(openFrame(key, frame), originals[index]);
          });
        },
      ),
      { numRuns: 15 },
    );
  });

  it("opens frames sealed on the event loop, in order, whatever their sizes and codecs", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(payload, fc.constantFrom(...codecs)), { minLength: 1, maxLength: 12 }),
        async (jobs) => {
          const sealed = jobs.map(([bytes, codec], index) =>
            sealFrame(key, codec, { machineId: "m1", firstSeq: index + 1, lastSeq: index + 1 }, bytes),
          );
          const opened = await Promise.all(sealed.map((frame) => pool.open(frame)));
          opened.forEach((bytes, index) => {
            assert.deepEqual(bytes, jobs[index]?.[0]);
          });
        },
      ),
      { numRuns: 15 },
    );
  });

  it("transfers a batch that owns its buffer instead of copying it, and copies a pooled one", async () => {
    const large = Buffer.from(randomBytes(100_000));
    const copy = Buffer.from(large);
    const frame = await pool.seal(Codec.CODEC_ZSTD, { machineId: "m1", firstSeq: 1, lastSeq: 1 }, large);
    assert.equal(large.length, 0, "the caller's Buffer was handed over (detached)");
    assert.deepEqual(openFrame(key, frame), copy);

    const small = Buffer.from("a small batch in Node's shared buffer pool");
    const neighbour = Buffer.from("its neighbour in the same pool");
    assert.equal(small.buffer, neighbour.buffer, "both Buffers come from one pool slab");
    const smallFrame = await pool.seal(Codec.CODEC_LZ4, { machineId: "m1", firstSeq: 2, lastSeq: 2 }, small);
    assert.equal(small.toString(), "a small batch in Node's shared buffer pool");
    assert.equal(neighbour.toString(), "its neighbour in the same pool");
    assert.equal(openFrame(key, smallFrame).toString(), "a small batch in Node's shared buffer pool");
  });

  it("transfers a push's batch in the buffer of its received message whole, and copies one in a shared chunk", async () => {
    const batch = randomBytes(50_000);
    const message = Buffer.from(
      PushRequest.encode({ machineId: "m1", firstSeq: 3, lastSeq: 3, batch, resync: false }).finish(),
    );
    const decode = ownedMessageDecoder(decodePushRequest);
    // As grpc-js hands it over: the 5-byte header, then the message, alone in a fresh buffer.
    const received = Buffer.concat([Buffer.alloc(5), message]);
    const request = decode(received.subarray(5));
    const frame = await pool.seal(Codec.CODEC_ZSTD, { machineId: "m1", firstSeq: 3, lastSeq: 3 }, request.batch);
    assert.equal(received.length, 0, "the whole message buffer was handed over");
    assert.deepEqual(openFrame(key, frame), batch);

    // The same message followed by another in one chunk: its buffer is not its alone, so it is copied.
    const chunk = Buffer.concat([Buffer.alloc(5), message, Buffer.from("next message")]);
    const shared = decode(chunk.subarray(5, 5 + message.length));
    const sharedFrame = await pool.seal(Codec.CODEC_LZ4, { machineId: "m1", firstSeq: 4, lastSeq: 4 }, shared.batch);
    assert.equal(chunk.subarray(5 + message.length).toString(), "next message");
    assert.deepEqual(openFrame(key, sharedFrame), batch);
  });

  it("fails a tampered frame alone: the frames around it open, and the pool goes on", async () => {
    const frames: Frame[] = [1, 2, 3, 4].map((seq) =>
      sealFrame(key, Codec.CODEC_ZSTD, { machineId: "m1", firstSeq: seq, lastSeq: seq }, Buffer.from(`batch ${seq}`)),
    );
    const tampered = frames[1];
    assert.ok(tampered !== undefined);
    tampered.sealed[20] = (tampered.sealed[20] ?? 0) ^ 0xff;
    const wrongSize = frames[3];
    assert.ok(wrongSize !== undefined);
    wrongSize.uncompressedSize = 3; // the tag covers the header: also an authentication failure
    const results = await Promise.allSettled(frames.map((frame) => pool.open(frame)));
    assert.deepEqual(
      results.map((result) => result.status),
      ["fulfilled", "rejected", "fulfilled", "rejected"],
    );
    for (const result of results)
      if (result.status === "rejected") {
        const message = (result.reason as Error).message;
        assert.match(message, /frame failed authentication/);
        assert.ok(!message.includes(key.toString("hex")) && !message.includes(key.toString("base64")));
      }
    assert.equal((results[2] as PromiseFulfilledResult<Buffer>).value.toString(), "batch 3");
    const after = await pool.seal(Codec.CODEC_NONE, { machineId: "m1", firstSeq: 9, lastSeq: 9 }, Buffer.from("next"));
    assert.equal(openFrame(key, after).toString(), "next");
  });

  it("keeps its queue bounded: submissions beyond it wait for room", async () => {
    const single = new WorkerFrameSealer(key, 1);
    try {
      let highest = 0;
      const jobs = Array.from({ length: 60 }, (_, index) => {
        const job = single.seal(
          Codec.CODEC_ZSTD,
          { machineId: "m1", firstSeq: index + 1, lastSeq: index + 1 },
          randomBytes(50_000),
        );
        highest = Math.max(highest, single.queued);
        return job;
      });
      const frames = await Promise.all(jobs);
      assert.ok(highest <= single.maxQueued, `queued ${highest}, bound ${single.maxQueued}`);
      assert.deepEqual(
        frames.map((frame) => frame.firstSeq),
        jobs.map((_, index) => index + 1),
      );
    } finally {
      await single.close();
    }
  });

  it("on close rejects what is still queued and every later job", async () => {
    const jobs = Array.from({ length: 30 }, (_, index) =>
      pool.seal(Codec.CODEC_ZSTD, { machineId: "m1", firstSeq: index + 1, lastSeq: index + 1 }, randomBytes(200_000)),
    );
    const settled = Promise.allSettled(jobs);
    await pool.close();
    const results = await settled;
    const rejected = results.filter((result) => result.status === "rejected");
    assert.ok(rejected.length > 0, "some jobs were still waiting when the pool closed");
    for (const result of rejected) assert.ok(result.reason instanceof SealerClosed);
    await assert.rejects(
      pool.open(sealFrame(key, Codec.CODEC_NONE, { machineId: "m1", firstSeq: 1, lastSeq: 1 }, Buffer.from("x"))),
      SealerClosed,
    );
    await pool.close(); // twice is fine
  });

  it("sizes itself from the flag: 0 seals inline, and out-of-range counts are refused", async () => {
    const inline = createFrameSealer(key, 0);
    assert.ok(inline instanceof InlineFrameSealer);
    const frame = await inline.seal(
      Codec.CODEC_LZ4,
      { machineId: "m1", firstSeq: 1, lastSeq: 1 },
      Buffer.from("inline"),
    );
    assert.equal((await pool.open(frame)).toString(), "inline");
    for (const workers of [-1, 1.5, 65])
      assert.throws(() => createFrameSealer(key, workers), /codec workers must be an integer from 0 to 64/);
  });
});
