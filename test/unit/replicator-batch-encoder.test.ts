// The hand-written encoders and decoders must produce exactly what the generated ones do.
import { strict as assert } from "node:assert";
import fc from "fast-check";
import {
  ChangeBatch,
  Codec,
  EntryKind,
  Frame,
  PushRequest,
  type Change,
} from "../../src/gen/ksr/replication/v1/replication.js";
import { encodePushRequest, PushBuilder, pushSerialized, queuePush } from "../../src/replicator/agent/batch-encoder.js";
import { BufferPool } from "../../src/replicator/buffer-pool.js";
import { decodeFrameKeepingEncoding, encodeFrame } from "../../src/replicator/frame-codec.js";
import { decodeChangeBatch, decodeFrame, decodePushRequest } from "../../src/replicator/wire-reader.js";

const seq = fc.oneof(fc.constant(0), fc.nat(), fc.constant(2 ** 40 + 5), fc.constant(Number.MAX_SAFE_INTEGER));
const path = fc.oneof(fc.constant(""), fc.string(), fc.constant("dir/ü/файл"));
const operation: fc.Arbitrary<Change["op"]> = fc.oneof(
  fc
    .record({ path, offset: seq, data: fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes)) })
    .map((value) => ({ $case: "write" as const, value })),
  fc.record({ path, offset: seq, length: seq }).map((value) => ({ $case: "zero" as const, value })),
  fc
    .record({
      path,
      kind: fc.constantFrom(EntryKind.ENTRY_KIND_FILE, EntryKind.ENTRY_KIND_CHAR_DEVICE),
      mode: fc.nat(0o7777),
      rdevMajor: fc.nat(),
      rdevMinor: fc.nat(),
    })
    .map((value) => ({ $case: "make" as const, value })),
  fc.record({ from: path, to: path }).map((value) => ({ $case: "rename" as const, value })),
  fc
    .record({
      path,
      mode: fc.nat(0o7777),
      attributes: fc.option(
        fc.record({
          uid: fc.nat(),
          gid: fc.nat(),
          mtimeSec: fc.integer({ min: -(2 ** 40), max: 2 ** 40 }),
          mtimeNsec: fc.nat(999_999_999),
          xattrs: fc.array(
            fc.record({
              name: fc.string(),
              value: fc.uint8Array({ maxLength: 40 }).map((bytes) => Buffer.from(bytes)),
            }),
          ),
        }),
        { nil: undefined },
      ),
    })
    .map((value) => ({ $case: "setAttributes" as const, value })),
);
const batch = fc.record({
  formatVersion: fc.nat(3),
  machineId: path,
  changes: fc.array(fc.record({ seq, op: operation })),
});

/** The fields a push request and a frame share: whose changes, which seqs, and payload bytes. */
const range = { machineId: path, firstSeq: seq, lastSeq: seq };
const payload = fc.uint8Array({ maxLength: 500 }).map((bytes) => Buffer.from(bytes));

const frame = fc.record({
  ...range,
  codec: fc.constantFrom(Codec.CODEC_UNSPECIFIED, Codec.CODEC_NONE, Codec.CODEC_ZSTD, Codec.CODEC_LZ4),
  sealed: payload,
  afterGap: fc.boolean(),
  uncompressedSize: fc.oneof(fc.constant(0), fc.nat(), fc.constant(2 ** 32 - 1)),
});

/** What a decoder makes of bytes: its result, or that it threw. */
function outcome<T>(decode: () => T): { value: T } | { threw: true } {
  try {
    return { value: decode() };
  } catch {
    return { threw: true };
  }
}

/** Protobuf-shaped noise: valid tags and lengths with random contents, and plain random bytes. */
const noise = fc.oneof(
  fc.uint8Array({ maxLength: 200 }),
  fc
    .array(fc.tuple(fc.nat(20), fc.constantFrom(0, 1, 2, 4, 5), fc.uint8Array({ maxLength: 20 })))
    .map((fields) =>
      Buffer.concat(
        fields.map(([field, wireType, body]) =>
          Buffer.concat([
            Buffer.from([(field << 3) | wireType]),
            wireType === 2 ? Buffer.from([body.length]) : Buffer.alloc(0),
            body,
          ]),
        ),
      ),
    ),
);

describe("replicator batch encoder", () => {
  it("builds pushes byte for byte like the generated encoders, in reused and grown buffers", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(batch, fc.boolean()), { minLength: 1, maxLength: 4 }),
        fc.nat(4000),
        (pushes, poolBytes) => {
          const { machineId, formatVersion } = pushes[0]![0];
          const builder = new PushBuilder(machineId, formatVersion, new BufferPool(poolBytes, 2));
          for (const [{ changes }, resync] of pushes) {
            for (const change of changes) builder.add(change);
            const { request } = builder.finish(resync);
            const expected: PushRequest = {
              machineId,
              firstSeq: changes[0]?.seq ?? 0,
              lastSeq: changes.at(-1)?.seq ?? 0,
              batch: Buffer.from(ChangeBatch.encode({ formatVersion, machineId, changes }).finish()),
              resync,
            };
            assert.deepEqual(request, expected);
            assert.ok(encodePushRequest(request).equals(Buffer.from(PushRequest.encode(expected).finish())));
          }
        },
      ),
    );
  });

  it("builds a push whose data is copied when added, so the caller may reuse its buffer", () => {
    const builder = new PushBuilder("m", 1, new BufferPool(1 << 20, 2));
    const data = Buffer.from("first");
    builder.add({ seq: 1, op: { $case: "write", value: { path: "f", offset: 0, data } } });
    data.write("later");
    const batch = ChangeBatch.decode(builder.finish(false).request.batch);
    assert.deepEqual(batch.changes[0]?.op, {
      $case: "write",
      value: { path: "f", offset: 0, data: Buffer.from("first") },
    });
  });

  it("tells a built push's buffer free only once every queued write of it was serialized", () => {
    const builder = new PushBuilder("m", 1, new BufferPool(1 << 20, 2));
    builder.add({ seq: 1, op: { $case: "write", value: { path: "f", offset: 0, data: Buffer.alloc(300_000, 7) } } });
    const { request, buffer } = builder.finish(false);
    assert.ok(buffer !== undefined, "a push filling its buffer stays in it");
    queuePush(request);
    queuePush(request);
    encodePushRequest(request);
    assert.equal(pushSerialized(request), false);
    encodePushRequest(request);
    assert.equal(pushSerialized(request), true);
  });

  it("copies a small push out of its buffer, which serves the next push", () => {
    const builder = new PushBuilder("m", 1, new BufferPool(1 << 20, 2));
    builder.add({ seq: 1, op: { $case: "zero", value: { path: "f", offset: 0, length: 9 } } });
    const first = builder.finish(false);
    builder.add({ seq: 2, op: { $case: "write", value: { path: "f", offset: 0, data: Buffer.alloc(1000, 1) } } });
    builder.finish(false);
    assert.equal(first.buffer, undefined);
    assert.deepEqual(ChangeBatch.decode(first.request.batch).changes, [
      { seq: 1, op: { $case: "zero", value: { path: "f", offset: 0, length: 9 } } },
    ]);
  });

  it("decodes change batches like the generated decoder, write data as views", () => {
    fc.assert(
      fc.property(batch, (value) => {
        const encoded = Buffer.from(ChangeBatch.encode(value).finish());
        const decoded = decodeChangeBatch(encoded);
        assert.deepEqual(decoded, ChangeBatch.decode(encoded));
        for (const change of decoded.changes)
          if (change.op?.$case === "write" && change.op.value.data.length > 0)
            assert.equal(change.op.value.data.buffer, encoded.buffer, "write data is a view");
      }),
    );
  });

  it("decodes any bytes as the generated decoders do (same value, or both refuse)", () => {
    fc.assert(
      fc.property(noise, (bytes) => {
        assert.deepEqual(
          outcome(() => decodeChangeBatch(bytes)),
          outcome(() => ChangeBatch.decode(bytes)),
        );
        assert.deepEqual(
          outcome(() => decodeFrame(bytes)),
          outcome(() => Frame.decode(bytes)),
        );
        assert.deepEqual(
          outcome(() => decodePushRequest(bytes)),
          outcome(() => PushRequest.decode(bytes)),
        );
      }),
    );
  });

  it("decodes frames like the generated decoder and forwards them as read while unchanged", () => {
    fc.assert(
      fc.property(frame, (value) => {
        const encoded = Buffer.from(Frame.encode(value).finish());
        const decoded = decodeFrameKeepingEncoding(encoded);
        assert.deepEqual(decoded, Frame.decode(encoded));
        assert.equal(encodeFrame(decoded), encoded, "sent as read");
        const flagged = { ...decoded, afterGap: !decoded.afterGap };
        assert.ok(encodeFrame(flagged).equals(Buffer.from(Frame.encode(flagged).finish())));
      }),
    );
  });

  it("encodes push requests byte for byte like the generated encoder", () => {
    fc.assert(
      fc.property(fc.record({ ...range, batch: payload, resync: fc.boolean() }), (request) => {
        const decoded = PushRequest.decode(encodePushRequest(request));
        assert.deepEqual(decoded, { ...request });
        assert.deepEqual(decodePushRequest(encodePushRequest(request)), decoded);
        assert.ok(encodePushRequest(request).equals(Buffer.from(PushRequest.encode(request).finish())));
      }),
    );
  });

  it("encodes frames byte for byte like the generated encoder, after the prefix it leaves", () => {
    fc.assert(
      fc.property(frame, fc.nat(16), (frame, prefix) => {
        const encoded = encodeFrame(frame, prefix);
        assert.equal(encoded.length, prefix + Frame.encode(frame).finish().length);
        assert.ok(encoded.subarray(prefix).equals(Buffer.from(Frame.encode(frame).finish())));
        assert.deepEqual(Frame.decode(encoded.subarray(prefix)), { ...frame });
      }),
    );
  });
});
