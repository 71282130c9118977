// The server side of RFC 6455 WebSockets, enough for the kubelet's channel
// protocols: the handshake, masked client frames (fragmented or not), ping,
// pong and close. The apiserver passes a WebSocket exec through to the
// kubelet when the client does not offer v5.channel.k8s.io (which it would
// translate to SPDY); the kubelet's streaming server accepts those.
import { createHash } from "node:crypto";
import type { Socket } from "node:net";

const handshakeGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/** Larger messages are refused (close 1009): exec input and resize messages are small. */
export const maxMessageBytes = 16 * 1024 * 1024;

export const opcode = { continuation: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 } as const;

export function acceptKey(key: string): string {
  return createHash("sha1")
    .update(key + handshakeGuid)
    .digest("base64");
}

export class WebSocketProtocolError extends Error {
  constructor(
    readonly closeCode: number,
    message: string,
  ) {
    super(message);
  }
}

export interface WsFrame {
  fin: boolean;
  opcode: number;
  payload: Buffer;
}

/** A server's frame: never masked. */
export function encodeFrame(frameOpcode: number, payload: Buffer, fin = true): Buffer {
  const first = (fin ? 0x80 : 0) | frameOpcode;
  if (payload.length < 126) return Buffer.concat([Buffer.from([first, payload.length]), payload]);
  if (payload.length < 0x10000) {
    const header = Buffer.from([first, 126, 0, 0]);
    header.writeUInt16BE(payload.length, 2);
    return Buffer.concat([header, payload]);
  }
  const header = Buffer.alloc(10);
  header[0] = first;
  header[1] = 127;
  header.writeBigUInt64BE(BigInt(payload.length), 2);
  return Buffer.concat([header, payload]);
}

/** A client's frame, masked as RFC 6455 requires of clients (tests use it to play the client). */
export function encodeMaskedFrame(frameOpcode: number, payload: Buffer, mask: Buffer, fin = true): Buffer {
  const plain = encodeFrame(frameOpcode, payload, fin);
  const headerLength = plain.length - payload.length;
  const header = Buffer.from(plain.subarray(0, headerLength));
  header[1] = (header[1] ?? 0) | 0x80;
  const masked = Buffer.from(payload.map((byte, i) => byte ^ (mask[i % 4] ?? 0)));
  return Buffer.concat([header, mask.subarray(0, 4), masked]);
}

/** Splits client bytes into frames, unmasking them; refuses unmasked or oversized frames. */
export class WsFrameReader {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): WsFrame[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const frames: WsFrame[] = [];
    for (;;) {
      if (this.pending.length < 2) break;
      const first = this.pending[0] ?? 0;
      const second = this.pending[1] ?? 0;
      if ((first & 0x70) !== 0) throw new WebSocketProtocolError(1002, "reserved bits set without an extension");
      if ((second & 0x80) === 0) throw new WebSocketProtocolError(1002, "client frames must be masked");
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
      if (this.pending.length < offset + 4 + length) break;
      const mask = this.pending.subarray(offset, offset + 4);
      const payload = Buffer.from(this.pending.subarray(offset + 4, offset + 4 + length));
      for (let i = 0; i < payload.length; i++) payload[i] = (payload[i] ?? 0) ^ (mask[i % 4] ?? 0);
      frames.push({ fin: (first & 0x80) !== 0, opcode: first & 0x0f, payload });
      this.pending = this.pending.subarray(offset + 4 + length);
    }
    return frames;
  }
}

/** One accepted WebSocket: whole messages in, messages out. */
export class WebSocketConnection {
  private readonly reader = new WsFrameReader();
  private fragments: Buffer[] = [];
  private fragmentOpcode = 0;
  private closed = false;
  private readonly closeListeners: (() => void)[] = [];

  constructor(
    private readonly socket: Socket,
    private readonly onMessage: (data: Buffer, binary: boolean) => void,
  ) {
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => {
      try {
        for (const frame of this.reader.push(chunk)) this.handle(frame);
      } catch (error) {
        this.close(error instanceof WebSocketProtocolError ? error.closeCode : 1002);
      }
    });
    socket.on("close", () => {
      this.finished();
    });
    socket.on("error", () => {
      this.finished();
    });
  }

  onClose(listener: () => void): void {
    if (this.closed) listener();
    else this.closeListeners.push(listener);
  }

  private handle(frame: WsFrame): void {
    switch (frame.opcode) {
      case opcode.ping:
        this.write(encodeFrame(opcode.pong, frame.payload));
        return;
      case opcode.pong:
        return;
      case opcode.close:
        this.close(1000);
        return;
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
    if (this.fragments.reduce((sum, part) => sum + part.length, 0) > maxMessageBytes)
      throw new WebSocketProtocolError(1009, "message too large");
    if (!frame.fin) return;
    const message = Buffer.concat(this.fragments);
    this.fragments = [];
    this.onMessage(message, this.fragmentOpcode === opcode.binary);
  }

  private write(bytes: Buffer): boolean {
    if (this.closed || this.socket.destroyed) return true;
    return this.socket.write(bytes);
  }

  /** Sends one message; resolves once the socket can take more. */
  send(data: Buffer, binary: boolean): Promise<void> {
    if (this.write(encodeFrame(binary ? opcode.binary : opcode.text, data))) return Promise.resolve();
    return new Promise((resolve) => this.socket.once("drain", resolve));
  }

  close(code = 1000): void {
    if (this.closed) return;
    const payload = Buffer.alloc(2);
    payload.writeUInt16BE(code);
    this.write(encodeFrame(opcode.close, payload));
    this.socket.end();
    this.finished();
  }

  destroy(): void {
    this.socket.destroy();
    this.finished();
  }

  private finished(): void {
    if (this.closed) return;
    this.closed = true;
    for (const listener of this.closeListeners.splice(0)) listener();
  }
}
