// The server side of RFC 6455 WebSockets, enough for the kubelet's channel
// protocols: the handshake, and on the frames of src/util/websocket-frames.ts
// whole messages, ping, pong and close. The apiserver passes a WebSocket exec through to the
// kubelet when the client does not offer v5.channel.k8s.io (which it would
// translate to SPDY); the kubelet's streaming server accepts those.
import { createHash } from "node:crypto";
import type { Socket } from "node:net";
import {
  encodeFrame,
  MessageReader,
  opcode,
  WebSocketProtocolError,
  type WsEvent,
} from "../../../util/websocket-frames.js";

const handshakeGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

export function acceptKey(key: string): string {
  return createHash("sha1")
    .update(key + handshakeGuid)
    .digest("base64");
}

/** One accepted WebSocket: whole messages in, messages out. */
export class WebSocketConnection {
  private readonly reader = new MessageReader("client");
  private closed = false;
  private readonly closeListeners: (() => void)[] = [];

  constructor(
    private readonly socket: Socket,
    private readonly onMessage: (data: Buffer, binary: boolean) => void,
  ) {
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => {
      try {
        for (const event of this.reader.push(chunk)) this.handle(event);
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

  private handle(event: WsEvent): void {
    if (event.kind === "message") this.onMessage(event.data, event.binary);
    else if (event.opcode === opcode.ping) this.write(encodeFrame(opcode.pong, event.payload));
    else if (event.opcode === opcode.close) this.close(1000);
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
