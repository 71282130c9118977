// SPDY/3.1 as Kubernetes speaks it between the API server and a kubelet
// (github.com/moby/spdystream): an upgraded HTTP/1.1 connection carrying
// client-initiated streams whose headers (`streamType`, `port`, `requestID`)
// say what each one is for. The peer sends no flow control and ignores ours,
// so none is kept; SETTINGS and WINDOW_UPDATE frames are read and dropped.
import { Duplex } from "node:stream";
import type { Socket } from "node:net";
import { constants as zlibConstants, createDeflate, createInflate, type Deflate, type Inflate } from "node:zlib";

export const spdyVersion = 3;
/** Largest payload a frame's 24-bit length can say. */
export const maxFrameLength = 0xffffff;
/** Data is sent in frames of at most this size, as spdystream's readers expect nothing larger in practice. */
export const dataChunkSize = 32 * 1024;
export const flagFin = 0x01;

export const controlType = {
  synStream: 1,
  synReply: 2,
  rstStream: 3,
  settings: 4,
  ping: 6,
  goAway: 7,
  headers: 8,
  windowUpdate: 9,
} as const;

export const rstStatus = { protocolError: 1, invalidStream: 2, refusedStream: 3, cancel: 5, internalError: 6 } as const;

// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00 §2.6.10.1):
// 4-byte-length-prefixed header names and words, then a run of plain text.
const dictionaryWords = [
  ..."options head post put delete trace accept accept-charset accept-encoding accept-language accept-ranges age".split(
    " ",
  ),
  ..."allow authorization cache-control connection content-base content-encoding content-language".split(" "),
  ..."content-length content-location content-md5 content-range content-type date etag expect expires from".split(" "),
  ..."host if-match if-modified-since if-none-match if-range if-unmodified-since last-modified location".split(" "),
  ..."max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after server te trailer".split(
    " ",
  ),
  ..."transfer-encoding upgrade user-agent vary via warning www-authenticate method get status".split(" "),
  "200 OK",
  "version",
  "HTTP/1.1",
  "url",
  "public",
  "set-cookie",
  "keep-alive",
  "origin",
];
const dictionaryText =
  "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505" +
  "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized" +
  "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable" +
  "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT" +
  "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain," +
  "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

export const headerDictionary: Buffer = Buffer.concat([
  ...dictionaryWords.map((word) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(word.length);
    return Buffer.concat([length, Buffer.from(word, "latin1")]);
  }),
  Buffer.from(dictionaryText, "latin1"),
]);

export class SpdyProtocolError extends Error {}

export type RawFrame =
  | { control: false; streamId: number; flags: number; data: Buffer }
  | { control: true; version: number; type: number; flags: number; payload: Buffer };

/** Splits a byte stream into frames; keeps an incomplete frame until the rest arrives. */
export class FrameReader {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): RawFrame[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const frames: RawFrame[] = [];
    for (;;) {
      if (this.pending.length < 8) break;
      const length = this.pending.readUIntBE(5, 3);
      if (this.pending.length < 8 + length) break;
      const first = this.pending.readUInt32BE(0);
      const flags = this.pending.readUInt8(4);
      const body = this.pending.subarray(8, 8 + length);
      if ((first & 0x80000000) !== 0) {
        frames.push({ control: true, version: (first >>> 16) & 0x7fff, type: first & 0xffff, flags, payload: body });
      } else {
        frames.push({ control: false, streamId: first & 0x7fffffff, flags, data: body });
      }
      this.pending = this.pending.subarray(8 + length);
    }
    return frames;
  }
}

function frameHeader(first: number, flags: number, length: number): Buffer {
  if (length > maxFrameLength)
    throw new SpdyProtocolError(`frame payload of ${length} bytes exceeds ${maxFrameLength}`);
  const header = Buffer.alloc(8);
  header.writeUInt32BE(first >>> 0, 0);
  header.writeUInt8(flags, 4);
  header.writeUIntBE(length, 5, 3);
  return header;
}

export function encodeDataFrame(streamId: number, data: Buffer, fin: boolean): Buffer {
  return Buffer.concat([frameHeader(streamId & 0x7fffffff, fin ? flagFin : 0, data.length), data]);
}

export function encodeControlFrame(type: number, flags: number, payload: Buffer): Buffer {
  return Buffer.concat([frameHeader((0x80000000 | (spdyVersion << 16) | type) >>> 0, flags, payload.length), payload]);
}

const uint32s = (...values: number[]) => {
  const buffer = Buffer.alloc(4 * values.length);
  values.forEach((value, i) => buffer.writeUInt32BE(value >>> 0, 4 * i));
  return buffer;
};

export const encodeRstStream = (streamId: number, status: number) =>
  encodeControlFrame(controlType.rstStream, 0, uint32s(streamId & 0x7fffffff, status));
export const encodePing = (id: number) => encodeControlFrame(controlType.ping, 0, uint32s(id));
export const encodeGoAway = (lastGoodStreamId: number, status: number) =>
  encodeControlFrame(controlType.goAway, 0, uint32s(lastGoodStreamId & 0x7fffffff, status));

/** Header names are lower case; several values of one name travel NUL-separated in one entry. */
export type SpdyHeaders = Map<string, string[]>;

/** The uncompressed name/value block: a count, then length-prefixed names and values. */
export function encodeHeaderBlock(headers: SpdyHeaders): Buffer {
  const parts: Buffer[] = [uint32s(headers.size)];
  for (const [name, values] of headers) {
    for (const text of [name.toLowerCase(), values.join("\0")]) {
      const bytes = Buffer.from(text, "utf8");
      parts.push(uint32s(bytes.length), bytes);
    }
  }
  return Buffer.concat(parts);
}

export function decodeHeaderBlock(block: Buffer): SpdyHeaders {
  let offset = 0;
  const take = (what: string): Buffer => {
    if (offset + 4 > block.length) throw new SpdyProtocolError(`header block ends inside the length of ${what}`);
    const length = block.readUInt32BE(offset);
    offset += 4;
    if (offset + length > block.length)
      throw new SpdyProtocolError(`header block ends inside ${what} (${length} bytes announced)`);
    const bytes = block.subarray(offset, offset + length);
    offset += length;
    return bytes;
  };
  if (block.length < 4) throw new SpdyProtocolError("header block shorter than its entry count");
  const count = block.readUInt32BE(0);
  offset = 4;
  const headers: SpdyHeaders = new Map();
  for (let i = 0; i < count; i++) {
    const name = take("a header name").toString("utf8");
    if (name === "" || name !== name.toLowerCase())
      throw new SpdyProtocolError(`header name ${JSON.stringify(name)} is empty or not lower case`);
    if (headers.has(name)) throw new SpdyProtocolError(`header ${name} appears twice`);
    headers.set(name, take(`the value of ${name}`).toString("utf8").split("\0"));
  }
  if (offset !== block.length) throw new SpdyProtocolError(`${block.length - offset} bytes after the header block`);
  return headers;
}

/**
 * One direction's zlib context: SPDY compresses every header block of a
 * connection in one stream, with a sync flush after each block.
 */
class ZlibContext {
  private chunks: Buffer[] = [];
  private queue: Promise<unknown> = Promise.resolve();
  private failure: Error | undefined;

  constructor(private readonly zlib: Deflate | Inflate) {
    zlib.on("data", (chunk: Buffer) => this.chunks.push(chunk));
    zlib.on("error", (error: Error) => {
      this.failure = error;
    });
  }

  run(input: Buffer): Promise<Buffer> {
    const next = this.queue.then(
      () =>
        new Promise<Buffer>((resolve, reject) => {
          if (this.failure !== undefined) {
            reject(new SpdyProtocolError(`header compression failed: ${this.failure.message}`));
            return;
          }
          this.zlib.write(input);
          this.zlib.flush(zlibConstants.Z_SYNC_FLUSH, () => {
            if (this.failure !== undefined) {
              reject(new SpdyProtocolError(`header compression failed: ${this.failure.message}`));
              return;
            }
            const output = Buffer.concat(this.chunks);
            this.chunks = [];
            resolve(output);
          });
        }),
    );
    this.queue = next.catch(() => undefined);
    return next;
  }

  close(): void {
    this.zlib.close();
  }
}

export class HeaderCompressor {
  private readonly context = new ZlibContext(createDeflate({ dictionary: headerDictionary }));
  compress(headers: SpdyHeaders): Promise<Buffer> {
    return this.context.run(encodeHeaderBlock(headers));
  }
  close(): void {
    this.context.close();
  }
}

export class HeaderDecompressor {
  private readonly context = new ZlibContext(createInflate({ dictionary: headerDictionary }));
  async decompress(compressed: Buffer): Promise<SpdyHeaders> {
    return decodeHeaderBlock(await this.context.run(compressed));
  }
  close(): void {
    this.context.close();
  }
}

/** A stream the peer opened: readable is what it sends, writable what we send back; end() half-closes. */
export class SpdyStream extends Duplex {
  /** True once the peer half-closed (FIN) or reset the stream. */
  remoteClosed = false;

  constructor(
    readonly id: number,
    readonly headers: SpdyHeaders,
    private readonly session: SpdySession,
  ) {
    super({ allowHalfOpen: true });
  }

  header(name: string): string | undefined {
    return this.headers.get(name.toLowerCase())?.[0];
  }

  override _read(): void {
    // Data is pushed as frames arrive; the peer keeps no flow control to resume.
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.session.sendData(this.id, chunk, false, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.session.sendData(this.id, Buffer.alloc(0), true, callback);
  }

  /** Abandons the stream: RST_STREAM CANCEL to the peer. */
  reset(): void {
    this.session.reset(this.id, rstStatus.cancel);
    this.destroy();
  }

  /** Called by the session. */
  receive(data: Buffer, fin: boolean): void {
    if (data.length > 0) this.push(data);
    if (fin && !this.remoteClosed) {
      this.remoteClosed = true;
      this.push(null);
    }
  }
}

/** Decides on a new stream; false refuses it (RST_STREAM REFUSED_STREAM), as a kubelet refuses malformed ones. */
export type StreamHandler = (stream: SpdyStream) => boolean;

/** The server side of one SPDY connection (the kubelet's side of an upgraded request). */
export class SpdySession {
  private readonly reader = new FrameReader();
  private readonly compressor = new HeaderCompressor();
  private readonly decompressor = new HeaderDecompressor();
  private readonly streams = new Map<number, SpdyStream>();
  private lastStreamId = 0;
  /** Frames in, and frames out, each handled in order (header blocks share a zlib context per direction). */
  private inbound: Promise<void> = Promise.resolve();
  private outbound: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly closedListeners: (() => void)[] = [];

  constructor(
    private readonly socket: Socket,
    private readonly onStream: StreamHandler,
  ) {
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => {
      let frames: RawFrame[];
      try {
        frames = this.reader.push(chunk);
      } catch (error) {
        this.fail(error);
        return;
      }
      for (const frame of frames) {
        this.inbound = this.inbound
          .then(() => this.handle(frame))
          .catch((error: unknown) => {
            this.fail(error);
          });
      }
    });
    socket.on("close", () => {
      this.teardown();
    });
    socket.on("error", () => {
      this.teardown();
    });
  }

  onClose(listener: () => void): void {
    if (this.closed) listener();
    else this.closedListeners.push(listener);
  }

  /** Feeds bytes that arrived with the upgrade request, before the socket was handed over. */
  feed(head: Buffer): void {
    if (head.length > 0) this.socket.emit("data", head);
  }

  private async handle(frame: RawFrame): Promise<void> {
    if (this.closed) return;
    if (!frame.control) {
      const stream = this.streams.get(frame.streamId);
      if (stream === undefined) {
        this.write(encodeRstStream(frame.streamId, rstStatus.invalidStream));
        return;
      }
      stream.receive(frame.data, (frame.flags & flagFin) !== 0);
      return;
    }
    if (frame.version !== spdyVersion)
      throw new SpdyProtocolError(`SPDY version ${frame.version} is not supported (only ${spdyVersion})`);
    const payload = frame.payload;
    switch (frame.type) {
      case controlType.synStream: {
        if (payload.length < 10) throw new SpdyProtocolError("SYN_STREAM shorter than 10 bytes");
        const id = payload.readUInt32BE(0) & 0x7fffffff;
        const headers = await this.decompressor.decompress(payload.subarray(10));
        if (id % 2 !== 1 || id <= this.lastStreamId) {
          this.write(encodeRstStream(id, rstStatus.protocolError));
          return;
        }
        this.lastStreamId = id;
        const stream = new SpdyStream(id, headers, this);
        if (!this.onStream(stream)) {
          this.write(encodeRstStream(id, rstStatus.refusedStream));
          return;
        }
        this.streams.set(id, stream);
        stream.on("close", () => this.streams.delete(id));
        await this.reply(id);
        if ((frame.flags & flagFin) !== 0) stream.receive(Buffer.alloc(0), true);
        return;
      }
      case controlType.headers:
        // Decompressed only to keep the zlib context in step; extra headers change nothing here.
        if (payload.length >= 4) await this.decompressor.decompress(payload.subarray(4));
        return;
      case controlType.rstStream: {
        if (payload.length < 8) throw new SpdyProtocolError("RST_STREAM shorter than 8 bytes");
        const stream = this.streams.get(payload.readUInt32BE(0) & 0x7fffffff);
        if (stream !== undefined) {
          stream.remoteClosed = true;
          stream.destroy();
        }
        return;
      }
      case controlType.ping:
        if (payload.length < 4) throw new SpdyProtocolError("PING shorter than 4 bytes");
        // Only the peer's (odd) pings are answered; an even one would be the echo of our own.
        if (payload.readUInt32BE(0) % 2 === 1) this.write(encodePing(payload.readUInt32BE(0)));
        return;
      case controlType.goAway:
        this.close();
        return;
      default:
        // SETTINGS, WINDOW_UPDATE, SYN_REPLY (we open no streams) and unknown types are ignored.
        return;
    }
  }

  private reply(id: number): Promise<void> {
    return this.enqueue(async () => {
      const block = await this.compressor.compress(new Map());
      const payload = Buffer.concat([uint32s(id), block]);
      return encodeControlFrame(controlType.synReply, 0, payload);
    });
  }

  private enqueue(frame: () => Promise<Buffer> | Buffer, done?: (error?: Error | null) => void): Promise<void> {
    const next = this.outbound.then(async () => {
      if (this.closed) throw new Error("the SPDY connection is closed");
      const bytes = await frame();
      await new Promise<void>((resolve) => {
        if (this.socket.write(bytes)) resolve();
        else this.socket.once("drain", resolve);
      });
    });
    this.outbound = next.then(
      () => done?.(),
      (error: unknown) => done?.(error instanceof Error ? error : new Error(String(error))),
    );
    return this.outbound;
  }

  private write(frame: Buffer): void {
    void this.enqueue(() => frame);
  }

  sendData(streamId: number, data: Buffer, fin: boolean, done: (error?: Error | null) => void): void {
    void this.enqueue(() => {
      const frames: Buffer[] = [];
      for (let offset = 0; offset < data.length; offset += dataChunkSize) {
        const last = offset + dataChunkSize >= data.length;
        frames.push(encodeDataFrame(streamId, data.subarray(offset, offset + dataChunkSize), fin && last));
      }
      if (data.length === 0) frames.push(encodeDataFrame(streamId, data, fin));
      return Buffer.concat(frames);
    }, done);
  }

  reset(streamId: number, status: number): void {
    if (!this.closed) this.write(encodeRstStream(streamId, status));
  }

  /** Says GOAWAY once everything queued is sent, then closes the connection. */
  close(): void {
    if (this.closed) return;
    const last = this.lastStreamId;
    void this.enqueue(() => encodeGoAway(last, 0)).finally(() => {
      this.socket.end();
      this.teardown();
    });
  }

  /** Drops the connection at once (the node is shutting down). */
  destroy(): void {
    this.socket.destroy();
    this.teardown();
  }

  private fail(error: unknown): void {
    if (this.closed) return;
    this.socket.destroy(error instanceof Error ? error : new Error(String(error)));
    this.teardown();
  }

  private teardown(): void {
    if (this.closed) return;
    this.closed = true;
    for (const stream of this.streams.values()) stream.destroy();
    this.streams.clear();
    this.compressor.close();
    this.decompressor.close();
    for (const listener of this.closedListeners.splice(0)) listener();
  }
}
