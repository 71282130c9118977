// Protobuf wire format written by hand into one exactly-sized buffer, for the messages that carry
// payload bytes (ChangeBatch, PushRequest, Frame): the generated encoder copies the payload once
// per nesting level and again when finishing. Each hand encoder is held byte-identical to the
// generated one by a property test.
const varint = 0;
const lengthDelimited = 2;

function varintBytes(value: number): number {
  let bytes = 1;
  for (let rest = value; rest >= 0x80; rest = Math.floor(rest / 0x80)) bytes++;
  return bytes;
}

export function fieldBytes(length: number): number {
  return 1 + varintBytes(length) + length;
}

export class WireWriter {
  position = 0;
  constructor(readonly buffer: Buffer) {}

  varint(value: number): void {
    let rest = value;
    while (rest >= 0x80) {
      this.buffer[this.position++] = (rest % 0x80) | 0x80;
      rest = Math.floor(rest / 0x80);
    }
    this.buffer[this.position++] = rest;
  }

  tag(field: number, wireType: number): void {
    this.buffer[this.position++] = (field << 3) | wireType;
  }

  uint(field: number, value: number): void {
    if (value === 0) return;
    this.tag(field, varint);
    this.varint(value);
  }

  bytes(field: number, value: Uint8Array): void {
    if (value.length === 0) return;
    this.tag(field, lengthDelimited);
    this.varint(value.length);
    this.buffer.set(value, this.position);
    this.position += value.length;
  }

  header(field: number, length: number): void {
    this.tag(field, lengthDelimited);
    this.varint(length);
  }
}

export function uintBytes(value: number): number {
  return value === 0 ? 0 : 1 + varintBytes(value);
}

export function bytesBytes(length: number): number {
  return length === 0 ? 0 : fieldBytes(length);
}
