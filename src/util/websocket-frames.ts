// RFC 6455 frames both ways, for the two WebSocket ends this project has: the local kubelet's
// streaming server (src/local/node/kubelet-server) reads masked client frames and writes plain
// ones; the operator's exec client (src/runtime/pod-exec.ts) writes masked frames and reads the
// API server's plain ones. Frames split anywhere across chunks, 7-, 16- and 64-bit lengths,
// fragmented messages with control frames between the fragments.

export const opcode = { continuation: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 } as const;

/** Larger messages are refused (close 1009): exec output chunks, input and resize messages are small. */
export const maxMessageBytes = 16 * 1024 * 1024;

/** The peer broke the protocol; closeCode is the RFC 6455 status to close with. */
export class WebSocketProtocolError extends Error {
  constructor(
    readonly closeCode: number,
    message: string,
  ) {
    super(message);
    this.name = "WebSocketProtocolError";
  }
}

export interface WsFrame {
  fin: boolean;
  opcode: number;
  payload: Buffer;
}

/** One frame; with `mask` (4 bytes) masked, as a client's frames must be (§5.3), else plain, as a server's. */
export function encodeFrame(
  frameOpcode: number,
  payload: Buffer,
  options: { mask?: Buffer; fin?: boolean } = {},
): Buffer {
  const first = (options.fin === false ? 0 : 0x80) | frameOpcode;
  const maskBit = options.mask === undefined ? 0 : 0x80;
  let header: Buffer;
  if (payload.length < 126) header = Buffer.from([first, maskBit | payload.length]);
  else if (payload.length < 0x10000) {
    header = Buffer.from([first, maskBit | 126, 0, 0]);
    header.writeUInt16BE(payload.length, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = first;
    header[1] = maskBit | 127;
    header.writeBigUInt64BE(BigInt(payload.length), 2);
  }
  const { mask } = options;
  if (mask === undefined) return Buffer.concat([header, payload]);
  return Buffer.concat([header, mask.subarray(0, 4), applyMask(payload, mask)]);
}

function applyMask(payload: Buffer, mask: Buffer): Buffer {
  const out = Buffer.from(payload);
  for (let i = 0; i < out.length; i++) out[i] = (out[i] ?? 0) ^ (mask[i % 4] ?? 0);
  return out;
}

/** Who sent the bytes being read: a client's frames must be masked, a server's must not be. */
export type FrameSender = "client" | "server";

/** Splits one direction's bytes into frames, unmasking them; refuses what the sender must not send. */
export class FrameReader {
  private pending: Buffer = Buffer.alloc(0);

  constructor(private readonly sender: FrameSender) {}

  push(chunk: Buffer): WsFrame[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const frames: WsFrame[] = [];
    for (;;) {
      if (this.pending.length < 2) break;
      const first = this.pending[0] ?? 0;
      const second = this.pending[1] ?? 0;
      if ((first & 0x70) !== 0) throw new WebSocketProtocolError(1002, "reserved bits set without an extension");
      const masked = (second & 0x80) !== 0;
      if (this.sender === "client" && !masked) throw new WebSocketProtocolError(1002, "client frames must be masked");
      if (this.sender === "server" && masked)
        throw new WebSocketProtocolError(1002, "server frames must not be masked");
      let length = second & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.pending.length < 4) break;
        length = this.pending.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.pending.length < 10) break;
        const long = this.pending.readBigUInt64BE(2);
        if (long > BigInt(maxMessageBytes)) throw new WebSocketProtocolError(1009, "frame too large");
        length = Number(long);
        offset = 10;
      }
      if (length > maxMessageBytes) throw new WebSocketProtocolError(1009, "frame too large");
      const maskBytes = masked ? 4 : 0;
      if (this.pending.length < offset + maskBytes + length) break;
      const body = this.pending.subarray(offset + maskBytes, offset + maskBytes + length);
      const payload = masked ? applyMask(body, this.pending.subarray(offset, offset + 4)) : Buffer.from(body);
      frames.push({ fin: (first & 0x80) !== 0, opcode: first & 0x0f, payload });
      this.pending = this.pending.subarray(offset + maskBytes + length);
    }
    return frames;
  }
}

export type WsEvent =
  { kind: "message"; data: Buffer; binary: boolean } | { kind: "control"; opcode: number; payload: Buffer };

/** Frames reassembled into whole messages; control frames (close, ping, pong) as they come, between fragments too. */
export class MessageReader {
  private readonly frames: FrameReader;
  private fragments: Buffer[] = [];
  private fragmentBytes = 0;
  private fragmentOpcode = 0;

  constructor(sender: FrameSender) {
    this.frames = new FrameReader(sender);
  }

  push(chunk: Buffer): WsEvent[] {
    const events: WsEvent[] = [];
    for (const frame of this.frames.push(chunk)) {
      switch (frame.opcode) {
        case opcode.close:
        case opcode.ping:
        case opcode.pong:
          events.push({ kind: "control", opcode: frame.opcode, payload: frame.payload });
          continue;
        case opcode.continuation:
          if (this.fragments.length === 0) throw new WebSocketProtocolError(1002, "continuation without a message");
          break;
        case opcode.text:
        case opcode.binary:
          if (this.fragments.length > 0) throw new WebSocketProtocolError(1002, "new message inside a fragmented one");
          this.fragmentOpcode = frame.opcode;
          break;
        default:
          throw new WebSocketProtocolError(1002, `unknown opcode ${frame.opcode}`);
      }
      this.fragments.push(frame.payload);
      this.fragmentBytes += frame.payload.length;
      if (this.fragmentBytes > maxMessageBytes) throw new WebSocketProtocolError(1009, "message too large");
      if (!frame.fin) continue;
      events.push({
        kind: "message",
        data: Buffer.concat(this.fragments),
        binary: this.fragmentOpcode === opcode.binary,
      });
      this.fragments = [];
      this.fragmentBytes = 0;
    }
    return events;
  }
}
