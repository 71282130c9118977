// The remote-command protocol over one WebSocket, as the kubelet's streaming
// server speaks it: every message starts with its channel (0 stdin, 1 stdout,
// 2 stderr, 3 error, 4 resize), a byte in the binary protocols and an ASCII
// digit, with the rest base64-encoded, in the base64 ones. v4 reports the end
// as a JSON status on the error channel; before v4 only a failure's message.
import type { Socket } from "node:net";
import { PassThrough, Writable } from "node:stream";
import { execStreams } from "./exec.js";
import type { RemoteCommandTransport, StreamOptions } from "./remotecommand.js";
import { WebSocketConnection } from "./websocket.js";

export const webSocketProtocols = [
  "v4.channel.k8s.io",
  "v4.base64.channel.k8s.io",
  "channel.k8s.io",
  "base64.channel.k8s.io",
] as const;

const channel = { stdin: 0, stdout: 1, stderr: 2, error: 3, resize: 4 } as const;

export interface ChannelCodec {
  encode(channel: number, data: Buffer): { data: Buffer; binary: boolean };
  decode(message: Buffer): { channel: number; data: Buffer } | undefined;
}

export function channelCodec(protocol: string): ChannelCodec {
  if (protocol.includes("base64"))
    return {
      encode: (n, data) => ({ data: Buffer.from(`${n}${data.toString("base64")}`), binary: false }),
      decode: (message) => {
        const digit = message[0];
        if (digit === undefined || digit < 0x30 || digit > 0x39) return undefined;
        return { channel: digit - 0x30, data: Buffer.from(message.subarray(1).toString(), "base64") };
      },
    };
  return {
    encode: (n, data) => ({ data: Buffer.concat([Buffer.from([n]), data]), binary: true }),
    decode: (message) => (message.length === 0 ? undefined : { channel: message[0] ?? 0, data: message.subarray(1) }),
  };
}

/** Accepts the upgraded socket and serves the channels the request asked for. */
export function webSocketTransport(socket: Socket, protocol: string, options: StreamOptions): RemoteCommandTransport {
  const codec = channelCodec(protocol);
  const v4 = protocol.startsWith("v4.");
  const stdin = options.stdin ? new PassThrough() : undefined;
  const resize = options.tty ? new PassThrough() : undefined;
  const connection = new WebSocketConnection(socket, (message) => {
    const decoded = codec.decode(message);
    if (decoded === undefined) return;
    if (decoded.channel === channel.stdin) stdin?.write(decoded.data);
    else if (decoded.channel === channel.resize) resize?.write(decoded.data);
  });
  const send = (n: number, data: Buffer) => {
    const { data: payload, binary } = codec.encode(n, data);
    return connection.send(payload, binary);
  };
  const output = (n: number) =>
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        send(n, chunk).then(() => {
          callback();
        }, callback);
      },
    });
  const closed = new Promise<void>((resolve) => {
    connection.onClose(resolve);
  });
  void closed.then(() => {
    stdin?.end();
    resize?.end();
  });
  const stdout = options.stdout ? output(channel.stdout) : undefined;
  const stderr = options.stderr ? output(channel.stderr) : undefined;
  return {
    // The kubelet says the connection is up with an empty message on the lowest writable channel.
    ready: () =>
      send(
        stdout !== undefined ? channel.stdout : stderr !== undefined ? channel.stderr : channel.error,
        Buffer.alloc(0),
      ),
    streams: () => execStreams({ stdin, stdout, stderr, resize }, closed),
    async finish(status) {
      if (v4) await send(channel.error, Buffer.from(JSON.stringify(status)));
      else if (status.status !== "Success")
        await send(channel.error, Buffer.from(typeof status.message === "string" ? status.message : "error"));
      connection.close(1000);
    },
    closed,
    abort: () => {
      connection.close(1000);
    },
  };
}
