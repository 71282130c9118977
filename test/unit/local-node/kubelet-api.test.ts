import { strict as assert } from "node:assert";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import fc from "fast-check";
import { requestAttributes } from "../../../src/local/node/kubelet-server/authz.js";
import {
  decodeEntry,
  encodeEntry,
  entriesOf,
  formatTimestamp,
  joinLines,
  logText,
  parseTimestamp,
  renderLine,
  selectLines,
} from "../../../src/local/node/kubelet-server/container-log.js";
import { exitStatus, ResizeDecoder } from "../../../src/local/node/kubelet-server/exec.js";
import { followLog, LogQueryError, parseLogQuery } from "../../../src/local/node/kubelet-server/log-endpoint.js";
import { parsePort } from "../../../src/local/node/kubelet-server/portforward.js";
import {
  headerValues,
  negotiateProtocol,
  streamOptions,
} from "../../../src/local/node/kubelet-server/remotecommand.js";
import { parsePodPath } from "../../../src/local/node/kubelet-server/server.js";

describe("kubelet API: request attributes (as the kubelet's authorizer builds them)", () => {
  const cases: [string, string, string, string[]][] = [
    ["POST", "/exec/ns/pod/c", "create", ["proxy"]],
    ["GET", "/exec/ns/pod/c", "get", ["proxy"]],
    ["GET", "/containerLogs/ns/pod/c", "get", ["proxy"]],
    ["POST", "/portForward/ns/pod", "create", ["proxy"]],
    ["GET", "/healthz", "get", ["healthz", "proxy"]],
    ["GET", "/pods", "get", ["pods", "proxy"]],
    ["GET", "/stats/summary", "get", ["stats"]],
    ["GET", "/metrics", "get", ["metrics"]],
    ["GET", "/logs/syslog", "get", ["log"]],
    ["GET", "/statsfoo", "get", ["proxy"]],
    ["PUT", "/run/ns/pod/c", "update", ["proxy"]],
    ["DELETE", "/x", "delete", ["proxy"]],
  ];
  for (const [method, path, verb, subresources] of cases) {
    it(`${method} ${path} → ${verb} nodes/${subresources.join(",")}`, () => {
      assert.deepEqual(requestAttributes(method, path, "ksr-primary"), {
        verb,
        resource: "nodes",
        subresources,
        name: "ksr-primary",
      });
    });
  }
});

describe("kubelet API: paths and stream options", () => {
  const paths: [string, ReturnType<typeof parsePodPath>][] = [
    ["/exec/ns/pod/c", { verb: "exec", namespace: "ns", pod: "pod", container: "c" }],
    ["/exec/ns/pod/uid-1/c", { verb: "exec", namespace: "ns", pod: "pod", uid: "uid-1", container: "c" }],
    ["/containerLogs/ns/pod/c", { verb: "containerLogs", namespace: "ns", pod: "pod", container: "c" }],
    ["/portForward/ns/pod", { verb: "portForward", namespace: "ns", pod: "pod" }],
    ["/portForward/ns/pod/uid-1", { verb: "portForward", namespace: "ns", pod: "pod", uid: "uid-1" }],
    ["/exec/ns/pod", undefined],
    ["/exec/ns//c", undefined],
    ["/exec/ns/pod/a/b/c", undefined],
    ["/portForward/ns/pod/uid/extra", undefined],
  ];
  for (const [path, expected] of paths) {
    it(`parses ${path}`, () => {
      assert.deepEqual(parsePodPath(path), expected);
    });
  }

  it("reads the apiserver's exec flags, drops stderr with a tty, and refuses none at all", () => {
    assert.deepEqual(streamOptions(new URLSearchParams("input=1&output=1&error=1")), {
      stdin: true,
      stdout: true,
      stderr: true,
      tty: false,
    });
    assert.deepEqual(streamOptions(new URLSearchParams("output=1&error=1&tty=1")), {
      stdin: false,
      stdout: true,
      stderr: false,
      tty: true,
    });
    assert.throws(() => streamOptions(new URLSearchParams("command=true")), /at least 1 of stdin, stdout, stderr/);
  });

  it("negotiates the first offered protocol it speaks", () => {
    const offered = headerValues(["v5.channel.k8s.io", "v4.channel.k8s.io, v3.channel.k8s.io"]);
    assert.deepEqual(offered, ["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io"]);
    assert.equal(negotiateProtocol(offered, ["v4.channel.k8s.io"]), "v4.channel.k8s.io");
    assert.equal(negotiateProtocol(["channel.k8s.io"], ["v4.channel.k8s.io"]), undefined);
  });

  const ports: [string | undefined, number | undefined][] = [
    ["80", 80],
    ["65535", 65535],
    ["0", undefined],
    ["65536", undefined],
    ["-1", undefined],
    ["8080abc", undefined],
    [undefined, undefined],
  ];
  for (const [value, expected] of ports) {
    it(`port header ${String(value)} → ${String(expected)}`, () => {
      assert.equal(parsePort(value), expected);
    });
  }

  it("reports exit codes as the kubelet's v4 status", () => {
    assert.deepEqual(exitStatus(0), { metadata: {}, status: "Success" });
    const failed = exitStatus(3) as { reason: string; details: { causes: { reason: string; message: string }[] } };
    assert.equal(failed.reason, "NonZeroExitCode");
    assert.deepEqual(failed.details.causes, [{ reason: "ExitCode", message: "3" }]);
  });

  it("decodes terminal sizes however the resize stream is chunked", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc
            .tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff }))
            .map(([Width, Height]) => ({ Width, Height })),
        ),
        fc.array(fc.nat(), { maxLength: 6 }),
        (sizes, cuts) => {
          const text = sizes.map((s) => JSON.stringify(s)).join("");
          const points = [...new Set(cuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b);
          const decoder = new ResizeDecoder();
          const decoded = [];
          let last = 0;
          for (const point of [...points, text.length]) {
            decoded.push(...decoder.push(text.slice(last, point)));
            last = point;
          }
          assert.deepEqual(decoded, sizes);
        },
      ),
    );
  });

  it("ignores resize messages that are not sizes", () => {
    const decoder = new ResizeDecoder();
    assert.deepEqual(decoder.push('{"Width":-1,"Height":2}{"Width":"a"}{"Width":80,"Height":24}'), [
      { Width: 80, Height: 24 },
    ]);
  });
});

describe("kubelet API: CRI container logs", () => {
  const time = 1_796_000_000_123_456_789n;

  it("formats timestamps like Go's RFC3339Nano and parses them back", () => {
    assert.equal(formatTimestamp(time), "2026-11-30T00:53:20.123456789Z");
    assert.equal(formatTimestamp(1_796_000_000_120_000_000n), "2026-11-30T00:53:20.12Z");
    assert.equal(formatTimestamp(1_796_000_000_000_000_000n), "2026-11-30T00:53:20Z");
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 4_000_000_000_000_000_000n }), (ns) => {
        assert.equal(parseTimestamp(formatTimestamp(ns)), ns);
      }),
    );
  });

  it("gives back the container's output however it was chunked", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom("stdout" as const), fc.string({ maxLength: 30 })), { maxLength: 10 }),
        (chunks) => {
          const file = Buffer.concat(
            chunks.flatMap(([stream, text], i) =>
              entriesOf(Buffer.from(text), stream, time + BigInt(i)).map(encodeEntry),
            ),
          );
          const entries = file
            .toString()
            .split("\n")
            .filter((line) => line !== "")
            .map((line) => decodeEntry(Buffer.from(line)));
          const decoded = entries.flatMap((entry) => (entry === undefined ? [] : [entry]));
          assert.equal(decoded.length, entries.length);
          const text = Buffer.concat(joinLines(decoded).map((l) => renderLine(l, false)));
          assert.equal(text.toString(), chunks.map(([, t]) => t).join(""));
        },
      ),
    );
  });

  it("skips lines that are not log entries", () => {
    assert.equal(decodeEntry(Buffer.from("garbage")), undefined);
    assert.equal(decodeEntry(Buffer.from("2026-11-30T00:53:20Z stdin F x")), undefined);
    assert.equal(decodeEntry(Buffer.from("yesterday stdout F x")), undefined);
    assert.deepEqual(decodeEntry(Buffer.from("2026-11-30T00:53:20Z stderr P a b"))?.content.toString(), "a b");
  });

  const lines = joinLines(
    [0, 1, 2, 3, 4].map((i) => ({
      time: BigInt(i) * 1_000_000_000n,
      stream: "stdout" as const,
      full: true,
      content: Buffer.from(`l${i}`),
    })),
  );
  const selections: [string, Parameters<typeof selectLines>[1], string[]][] = [
    ["everything", {}, ["l0", "l1", "l2", "l3", "l4"]],
    ["the last two", { tailLines: 2 }, ["l3", "l4"]],
    ["none for tail 0", { tailLines: 0 }, []],
    ["since 3 s", { sinceNs: 3_000_000_000n }, ["l3", "l4"]],
    ["since, then tail", { sinceNs: 1_000_000_000n, tailLines: 1 }, ["l4"]],
  ];
  for (const [what, query, expected] of selections) {
    it(`selects ${what}`, () => {
      assert.deepEqual(
        selectLines(lines, query).map((l) => l.text.toString()),
        expected,
      );
    });
  }

  const queries: [string, string, RegExp | Partial<ReturnType<typeof parseLogQuery>>][] = [
    ["follow=true&tailLines=5&timestamps=true", "", { follow: true, tailLines: 5, timestamps: true, previous: false }],
    ["previous=true&limitBytes=10", "", { previous: true, limitBytes: 10 }],
    ["sinceSeconds=10", "", { sinceNs: 1_000_000_000_000n - 10_000_000_000n }],
    ["sinceTime=2026-11-30T00:53:20Z", "", { sinceNs: 1_796_000_000_000_000_000n }],
    ["tailLines=-1", "", /tailLines=-1 must be an integer of at least 0/],
    ["sinceSeconds=0", "", /sinceSeconds=0 must be an integer/],
    ["limitBytes=abc", "", /limitBytes=abc/],
    ["follow=maybe", "", /follow=maybe is not a boolean/],
    ["sinceSeconds=5&sinceTime=2026-11-30T00:53:20Z", "", /at most one of sinceTime or sinceSeconds/],
    ["sinceTime=yesterday", "", /not an RFC 3339 time/],
  ];
  for (const [query, , expected] of queries) {
    it(`log query ${query}`, () => {
      const parse = () => parseLogQuery(new URLSearchParams(query), 1_000_000_000_000n);
      if (expected instanceof RegExp)
        assert.throws(parse, (e: unknown) => e instanceof LogQueryError && expected.test(e.message));
      else {
        const parsed = parse();
        for (const [key, value] of Object.entries(expected))
          assert.deepEqual(parsed[key as keyof typeof parsed], value);
      }
    });
  }

  describe("followLog", () => {
    let dir: string;
    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), "ksr-follow-"));
    });
    afterEach(() => {
      rmSync(dir, { recursive: true, force: true });
    });

    const collect = (out: PassThrough) => {
      const chunks: Buffer[] = [];
      out.on("data", (c: Buffer) => chunks.push(c));
      return () => Buffer.concat(chunks).toString();
    };

    it("renders tail, timestamps and limitBytes from the file", async () => {
      const file = join(dir, "0.log");
      writeFileSync(
        file,
        ["a", "b", "c"]
          .map((t, i) =>
            encodeEntry({ time: time + BigInt(i), stream: "stdout", full: true, content: Buffer.from(t) }).toString(),
          )
          .join(""),
      );
      const out = new PassThrough();
      const text = collect(out);
      await followLog(file, { follow: false, previous: false, tailLines: 2, timestamps: true }, out, {
        stillWriting: () => false,
        follow: false,
      });
      assert.equal(text(), `${formatTimestamp(time + 1n)} b\n${formatTimestamp(time + 2n)} c\n`);
      const limited = new PassThrough();
      const limitedText = collect(limited);
      await followLog(file, { follow: false, previous: false, limitBytes: 3 }, limited, {
        stillWriting: () => false,
        follow: false,
      });
      assert.equal(limitedText(), "a\nb");
      assert.equal(logText(file), "a\nb\nc\n");
    });

    it("follows new lines until the run ends, joining partial lines", async () => {
      const file = join(dir, "0.log");
      const entry = (content: string, full: boolean) =>
        encodeEntry({ time, stream: "stdout", full, content: Buffer.from(content) });
      writeFileSync(file, entry("first", true));
      let writing = true;
      const out = new PassThrough();
      const text = collect(out);
      const following = followLog(file, { follow: true, previous: false }, out, {
        stillWriting: () => writing,
        follow: true,
      });
      await new Promise((resolve) => setTimeout(resolve, 150));
      writeFileSync(file, Buffer.concat([entry("first", true), entry("sec", false), entry("ond", true)]));
      await new Promise((resolve) => setTimeout(resolve, 150));
      writing = false;
      await following;
      assert.equal(text(), "first\nsecond\n");
    });
  });
});
