import { strict as assert } from "node:assert";
import { createServer, connect, type Socket } from "node:net";
import fc from "fast-check";
import {
  controlType,
  decodeHeaderBlock,
  encodeControlFrame,
  encodeDataFrame,
  encodeHeaderBlock,
  FrameReader,
  HeaderCompressor,
  HeaderDecompressor,
  headerDictionary,
  rstStatus,
  SpdyProtocolError,
  SpdySession,
  type RawFrame,
  type SpdyHeaders,
  type SpdyStream,
} from "../../../src/local/node/kubelet-server/spdy.js";
import { channelCodec, webSocketProtocols } from "../../../src/local/node/kubelet-server/channels.js";
import { acceptKey } from "../../../src/local/node/kubelet-server/websocket.js";
import { splitAt } from "../../fixture/property-runs.js";

function adler32(data: Buffer): number {
  let a = 1;
  let b = 0;
  for (const byte of data) {
    a = (a + byte) % 65521;
    b = (b + a) % 65521;
  }
  return ((b << 16) | a) >>> 0;
}

const headerName = fc.stringMatching(/^[a-z][a-z0-9-]{0,15}$/);
const headerValue = fc.string({ maxLength: 20 }).filter((v) => !v.includes("\0"));
const headers = fc
  .uniqueArray(fc.tuple(headerName, fc.array(headerValue, { minLength: 1, maxLength: 3 })), {
    selector: ([name]) => name,
    maxLength: 6,
  })
  .map((entries) => new Map(entries));

const frame: fc.Arbitrary<RawFrame> = fc.oneof(
  fc.record({
    control: fc.constant(false as const),
    streamId: fc.integer({ min: 1, max: 0x7fffffff }),
    flags: fc.constantFrom(0, 1),
    data: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
  }),
  fc.record({
    control: fc.constant(true as const),
    version: fc.constant(3),
    type: fc.constantFrom(...Object.values(controlType)),
    flags: fc.constantFrom(0, 1, 2),
    payload: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
  }),
);

const encode = (f: RawFrame) =>
  f.control ? encodeControlFrame(f.type, f.flags, f.payload) : encodeDataFrame(f.streamId, f.data, f.flags === 1);

/** Splits bytes at the given cut points. */
describe("kubelet API: SPDY/3.1 framing", () => {
  it("uses the SPDY/3 header dictionary (1423 bytes, the spec's Adler-32)", () => {
    assert.equal(headerDictionary.length, 1423);
    assert.equal(adler32(headerDictionary).toString(16), "e3c6a7c2");
  });

  it("decodes every header block it encodes", () => {
    fc.assert(
      fc.property(headers, (h) => {
        assert.deepEqual(decodeHeaderBlock(encodeHeaderBlock(h)), h);
      }),
    );
  });

  it("refuses every truncated or overlong header block", () => {
    fc.assert(
      fc.property(headers, fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 4 }), (h, cut, extra) => {
        const block = encodeHeaderBlock(h);
        const prefix = block.subarray(0, cut % block.length);
        assert.throws(() => decodeHeaderBlock(prefix), SpdyProtocolError);
        assert.throws(() => decodeHeaderBlock(Buffer.concat([block, extra])), SpdyProtocolError);
      }),
    );
  });

  const malformed: [string, Buffer][] = [
    ["an upper-case name", encodeHeaderBlock(new Map([["StreamType", ["error"]]]))],
    ["an empty name", encodeHeaderBlock(new Map([["", ["x"]]]))],
    [
      "a name twice",
      Buffer.concat([
        Buffer.from([0, 0, 0, 2]),
        encodeHeaderBlock(new Map([["port", ["1"]]])).subarray(4),
        encodeHeaderBlock(new Map([["port", ["2"]]])).subarray(4),
      ]),
    ],
  ];
  for (const [what, block] of malformed) {
    it(`refuses a header block with ${what}`, () => {
      if (what === "an upper-case name") {
        // encodeHeaderBlock lower-cases; forge the upper-case name by hand.
        const forged = Buffer.from(block);
        forged.write("StreamType", 8, "latin1");
        assert.throws(() => decodeHeaderBlock(forged), /not lower case/);
      } else assert.throws(() => decodeHeaderBlock(block), SpdyProtocolError);
    });
  }

  it("reads back the frames it writes, however the bytes are split", () => {
    fc.assert(
      fc.property(fc.array(frame, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 10 }), (frames, cuts) => {
        const reader = new FrameReader();
        const read = splitAt(Buffer.concat(frames.map(encode)), cuts).flatMap((piece) => reader.push(piece));
        assert.deepEqual(
          read.map((f) => (f.control ? { ...f, payload: [...f.payload] } : { ...f, data: [...f.data] })),
          frames.map((f) => (f.control ? { ...f, payload: [...f.payload] } : { ...f, data: [...f.data] })),
        );
      }),
    );
  });

  it("keeps one zlib context per direction across header blocks", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(headers, { minLength: 1, maxLength: 5 }), async (blocks) => {
        const compressor = new HeaderCompressor();
        const decompressor = new HeaderDecompressor();
        try {
          for (const block of blocks) {
            assert.deepEqual(await decompressor.decompress(await compressor.compress(block)), block);
          }
        } finally {
          compressor.close();
          decompressor.close();
        }
      }),
      { numRuns: 30 },
    );
  });
});

/** A minimal SPDY client built from the same encoders: enough to drive the server session. */
class TestClient {
  private readonly reader = new FrameReader();
  private readonly compressor = new HeaderCompressor();
  private readonly decompressor = new HeaderDecompressor();
  readonly frames: RawFrame[] = [];
  private waiters: (() => void)[] = [];

  constructor(readonly socket: Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.frames.push(...this.reader.push(chunk));
      for (const waiter of this.waiters.splice(0)) waiter();
    });
  }

  async open(id: number, h: SpdyHeaders, fin = false): Promise<void> {
    const block = await this.compressor.compress(h);
    const payload = Buffer.concat([Buffer.from([0, 0, 0, id, 0, 0, 0, 0, 0, 0]), block]);
    this.socket.write(encodeControlFrame(controlType.synStream, fin ? 1 : 0, payload));
  }

  send(id: number, data: string, fin = false): void {
    this.socket.write(encodeDataFrame(id, Buffer.from(data), fin));
  }

  async until(predicate: (frames: RawFrame[]) => boolean): Promise<void> {
    while (!predicate(this.frames)) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  async replyHeaders(f: RawFrame): Promise<SpdyHeaders> {
    assert.ok(f.control);
    return this.decompressor.decompress(f.payload.subarray(4));
  }

  close(): void {
    this.compressor.close();
    this.decompressor.close();
    this.socket.destroy();
  }
}

describe("kubelet API: SPDY session", () => {
  let client: TestClient;
  let accepted: SpdyStream[];
  let session: SpdySession | undefined;
  let closeServer: () => void;

  beforeEach(async () => {
    accepted = [];
    const server = createServer((socket) => {
      session = new SpdySession(socket, (stream) => {
        if (stream.header("streamtype") === "refuse") return false;
        accepted.push(stream);
        return true;
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    const port = typeof address === "object" && address !== null ? address.port : 0;
    const socket = connect(port, "127.0.0.1");
    await new Promise((resolve) => socket.once("connect", resolve));
    client = new TestClient(socket);
    closeServer = () => server.close();
  });
  afterEach(() => {
    client.close();
    session?.destroy();
    closeServer();
  });

  const control = (type: number) => (f: RawFrame) => f.control && f.type === type;

  it("replies to a stream, carries data both ways and half-closes with FIN", async () => {
    await client.open(1, new Map([["streamtype", ["stdin"]]]));
    await client.until((frames) => frames.some(control(controlType.synReply)));
    const reply = client.frames.find(control(controlType.synReply));
    assert.ok(reply?.control);
    assert.equal(reply.payload.readUInt32BE(0), 1);
    assert.deepEqual(await client.replyHeaders(reply), new Map());
    const stream = accepted[0];
    assert.ok(stream !== undefined);
    assert.equal(stream.header("streamType"), "stdin");
    const received: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => received.push(chunk));
    const ended = new Promise((resolve) => stream.once("end", resolve));
    client.send(1, "hello ");
    client.send(1, "world", true);
    await ended;
    assert.equal(Buffer.concat(received).toString(), "hello world");
    stream.end("back");
    await client.until((frames) => frames.some((f) => !f.control && (f.flags & 1) === 1));
    const data = client.frames.filter((f): f is Extract<RawFrame, { control: false }> => !f.control);
    assert.equal(Buffer.concat(data.map((f) => f.data)).toString(), "back");
    assert.deepEqual(
      data.map((f) => f.streamId),
      data.map(() => 1),
    );
  });

  it("refuses streams the handler rejects, and out-of-order stream ids", async () => {
    await client.open(1, new Map([["streamtype", ["refuse"]]]));
    await client.open(5, new Map([["streamtype", ["ok"]]]));
    await client.open(3, new Map([["streamtype", ["ok"]]]));
    await client.until((frames) => frames.filter(control(controlType.rstStream)).length === 2);
    const resets = client.frames
      .filter(control(controlType.rstStream))
      .map((f) => (f.control ? [f.payload.readUInt32BE(0), f.payload.readUInt32BE(4)] : []));
    assert.deepEqual(resets, [
      [1, rstStatus.refusedStream],
      [3, rstStatus.protocolError],
    ]);
    assert.deepEqual(
      accepted.map((s) => s.id),
      [5],
    );
  });

  it("answers the peer's pings and ignores SETTINGS and WINDOW_UPDATE", async () => {
    client.socket.write(encodeControlFrame(controlType.settings, 0, Buffer.from([0, 0, 0, 0])));
    client.socket.write(encodeControlFrame(controlType.windowUpdate, 0, Buffer.from([0, 0, 0, 1, 0, 0, 1, 0])));
    client.socket.write(encodeControlFrame(controlType.ping, 0, Buffer.from([0, 0, 0, 7])));
    await client.until((frames) => frames.some(control(controlType.ping)));
    const ping = client.frames.find(control(controlType.ping));
    assert.ok(ping?.control);
    assert.equal(ping.payload.readUInt32BE(0), 7);
  });

  it("says GOAWAY with the last stream id when closed", async () => {
    await client.open(1, new Map([["streamtype", ["error"]]]));
    await client.until((frames) => frames.some(control(controlType.synReply)));
    session?.close();
    await client.until((frames) => frames.some(control(controlType.goAway)));
    const goAway = client.frames.find(control(controlType.goAway));
    assert.ok(goAway?.control);
    assert.equal(goAway.payload.readUInt32BE(0), 1);
  });

  it("drops a connection that speaks another SPDY version", async () => {
    const bad = Buffer.from(encodeControlFrame(controlType.ping, 0, Buffer.from([0, 0, 0, 1])));
    bad.writeUInt16BE(0x8002, 0);
    client.socket.write(bad);
    await new Promise((resolve) => client.socket.once("close", resolve));
  });
});

describe("kubelet API: WebSocket handshake and channels", () => {
  it("answers the handshake with RFC 6455's accept key", () => {
    assert.equal(acceptKey("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  });

  for (const protocol of webSocketProtocols) {
    it(`${protocol}: decodes what it encodes on every channel`, () => {
      const codec = channelCodec(protocol);
      fc.assert(
        fc.property(fc.integer({ min: 0, max: 4 }), fc.uint8Array({ maxLength: 100 }), (n, bytes) => {
          const { data } = codec.encode(n, Buffer.from(bytes));
          assert.deepEqual(codec.decode(data), { channel: n, data: Buffer.from(bytes) });
        }),
      );
    });
  }
});
