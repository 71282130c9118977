// The WebSocket frame codec both ends use (the local kubelet's server, the operator's exec
// client): what one side encodes the other reads back, however the bytes are split; fragmented
// messages with control frames between fragments; and every frame a peer must not send refused
// with the close code RFC 6455 names.
import { strict as assert } from "node:assert";
import fc from "fast-check";
import {
  encodeFrame,
  FrameReader,
  maxMessageBytes,
  MessageReader,
  opcode,
  WebSocketProtocolError,
  type FrameSender,
} from "../../src/util/websocket-frames.js";
import { propertyRuns, splitAt } from "../fixture/property-runs.js";

const mask = Buffer.from([0x11, 0x22, 0x33, 0x44]);
/** A frame as `sender` sends it: a client's masked, a server's plain. */
const frameFrom = (sender: FrameSender, op: number, payload: Buffer, fin = true) =>
  encodeFrame(op, payload, sender === "client" ? { mask, fin } : { fin });

describe("WebSocket frames (RFC 6455)", () => {
  const payload = fc.uint8Array({ maxLength: 70_000 }).map((bytes) => Buffer.from(bytes));
  const cuts = fc.array(fc.nat(), { maxLength: 8 });

  for (const sender of ["client", "server"] as const)
    it(`reads back every ${sender} frame (7-, 16- and 64-bit lengths), however the bytes are split`, () => {
      fc.assert(
        fc.property(
          fc.array(
            fc.record({
              op: fc.constantFrom(opcode.text, opcode.binary, opcode.ping, opcode.continuation),
              payload,
              fin: fc.boolean(),
              mask: fc.uint8Array({ minLength: 4, maxLength: 4 }).map((bytes) => Buffer.from(bytes)),
            }),
            { maxLength: 4 },
          ),
          cuts,
          (frames, at) => {
            const bytes = Buffer.concat(
              frames.map((f) => encodeFrame(f.op, f.payload, sender === "client" ? f : { fin: f.fin })),
            );
            const reader = new FrameReader(sender);
            const read = splitAt(bytes, at).flatMap((piece) => reader.push(piece));
            assert.deepEqual(
              read.map((f) => [f.opcode, f.fin, f.payload.toString("hex")]),
              frames.map((f) => [f.op, f.fin, f.payload.toString("hex")]),
            );
          },
        ),
        propertyRuns(40),
      );
    });

  it("reassembles a fragmented message, passing the pings sent between its fragments as they come", () => {
    fc.assert(
      fc.property(
        fc.array(payload, { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        fc.constantFrom<FrameSender>("client", "server"),
        cuts,
        (parts, binary, sender, at) => {
          const bytes = Buffer.concat(
            parts.flatMap((part, i) => [
              frameFrom(
                sender,
                i === 0 ? (binary ? opcode.binary : opcode.text) : opcode.continuation,
                part,
                i === parts.length - 1,
              ),
              frameFrom(sender, opcode.ping, Buffer.from(`ping ${i}`)),
            ]),
          );
          const reader = new MessageReader(sender);
          const events = splitAt(bytes, at).flatMap((piece) => reader.push(piece));
          const expected = [
            ...parts
              .slice(0, -1)
              .map((_, i) => ({ kind: "control", opcode: opcode.ping, payload: Buffer.from(`ping ${i}`) })),
            { kind: "message", data: Buffer.concat(parts), binary },
            { kind: "control", opcode: opcode.ping, payload: Buffer.from(`ping ${parts.length - 1}`) },
          ];
          assert.deepEqual(events, expected);
        },
      ),
      propertyRuns(40),
    );
  });

  it("encodes the shortest length field, the mask bit and the mask only for clients, and FIN as asked", () => {
    const cases: [string, Buffer, number[]][] = [
      ["125 bytes plain", encodeFrame(opcode.binary, Buffer.alloc(125)), [0x82, 125]],
      ["126 bytes plain", encodeFrame(opcode.binary, Buffer.alloc(126)), [0x82, 126, 0, 126]],
      ["65535 bytes plain", encodeFrame(opcode.text, Buffer.alloc(65535)), [0x81, 126, 0xff, 0xff]],
      ["65536 bytes plain", encodeFrame(opcode.text, Buffer.alloc(65536)), [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]],
      [
        "masked",
        encodeFrame(opcode.pong, Buffer.from("ab"), { mask }),
        [0x8a, 0x82, 0x11, 0x22, 0x33, 0x44, 0x70, 0x40],
      ],
      ["not final", encodeFrame(opcode.text, Buffer.from("a"), { fin: false }), [0x01, 1, 0x61]],
    ];
    for (const [name, bytes, start] of cases) assert.deepEqual([...bytes.subarray(0, start.length)], start, name);
  });

  describe("refuses what a peer must not send", () => {
    const oversized = Buffer.from([0x82, 0xff, 0, 0, 0, 0, 0x10, 0, 0, 0, ...mask]);
    const cases: [string, FrameSender, Buffer, number, RegExp][] = [
      [
        "an unmasked client frame",
        "client",
        encodeFrame(opcode.text, Buffer.from("x")),
        1002,
        /client frames must be masked/,
      ],
      [
        "a masked server frame",
        "server",
        encodeFrame(opcode.text, Buffer.from("x"), { mask }),
        1002,
        /must not be masked/,
      ],
      ["reserved bits", "server", Buffer.from([0xc1, 0]), 1002, /reserved bits/],
      ["a frame longer than the limit", "client", oversized, 1009, /frame too large/],
      [
        "a continuation without a message",
        "server",
        frameFrom("server", opcode.continuation, Buffer.from("x")),
        1002,
        /continuation without a message/,
      ],
      [
        "a new message inside a fragmented one",
        "client",
        Buffer.concat([
          frameFrom("client", opcode.text, Buffer.from("a"), false),
          frameFrom("client", opcode.binary, Buffer.from("b")),
        ]),
        1002,
        /new message inside a fragmented one/,
      ],
      ["an unknown opcode", "server", frameFrom("server", 3, Buffer.alloc(0)), 1002, /unknown opcode 3/],
    ];
    for (const [name, sender, bytes, closeCode, message] of cases)
      it(name, () => {
        assert.throws(
          () => new MessageReader(sender).push(bytes),
          (error: unknown) =>
            error instanceof WebSocketProtocolError && error.closeCode === closeCode && message.test(error.message),
        );
      });

    it("a message whose fragments add up to more than the limit", () => {
      const half = Buffer.alloc(maxMessageBytes / 2 + 1);
      const reader = new MessageReader("server");
      assert.deepEqual(reader.push(frameFrom("server", opcode.binary, half, false)), []);
      assert.throws(
        () => reader.push(frameFrom("server", opcode.continuation, half)),
        (error: unknown) => error instanceof WebSocketProtocolError && error.closeCode === 1009,
      );
    });
  });
});
