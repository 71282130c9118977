// The hand-written encoder must produce exactly what the generated one does.
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
import { encodeChangeBatch, encodePushRequest } from "../../src/replicator/agent/batch-encoder.js";
import { encodeFrame } from "../../src/replicator/frame-codec.js";

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

describe("replicator batch encoder", () => {
  it("encodes change batches byte for byte like the generated encoder", () => {
    fc.assert(
      fc.property(batch, (value) => {
        assert.ok(encodeChangeBatch(value).equals(Buffer.from(ChangeBatch.encode(value).finish())));
      }),
    );
  });

  it("encodes push requests byte for byte like the generated encoder", () => {
    fc.assert(
      fc.property(fc.record({ ...range, batch: payload, resync: fc.boolean() }), (request) => {
        const decoded = PushRequest.decode(encodePushRequest(request));
        assert.deepEqual(decoded, { ...request });
        assert.ok(encodePushRequest(request).equals(Buffer.from(PushRequest.encode(request).finish())));
      }),
    );
  });

  it("encodes frames byte for byte like the generated encoder, after the prefix it leaves", () => {
    fc.assert(
      fc.property(
        fc.record({
          ...range,
          codec: fc.constantFrom(Codec.CODEC_UNSPECIFIED, Codec.CODEC_NONE, Codec.CODEC_ZSTD, Codec.CODEC_LZ4),
          sealed: payload,
          afterGap: fc.boolean(),
          uncompressedSize: fc.oneof(fc.constant(0), fc.nat(), fc.constant(2 ** 32 - 1)),
        }),
        fc.nat(16),
        (frame, prefix) => {
          const encoded = encodeFrame(frame, prefix);
          assert.equal(encoded.length, prefix + Frame.encode(frame).finish().length);
          assert.ok(encoded.subarray(prefix).equals(Buffer.from(Frame.encode(frame).finish())));
          assert.deepEqual(Frame.decode(encoded.subarray(prefix)), { ...frame });
        },
      ),
    );
  });
});
