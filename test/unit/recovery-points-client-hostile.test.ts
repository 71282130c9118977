// A hydration client against a hostile master target (our own RecoveryPoints service, served
// in process over real gRPC with mutual TLS): nothing it sends may write outside the destination.
import { strict as assert } from "node:assert";
import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import {
  EntryKind,
  RecoveryPointsService,
  type HydrateReply,
  type PointEntry,
  type RecoveryPointsClient,
  type RecoveryPointsServer,
} from "../../src/gen/ksr/replication/v1/replication.js";
import { shutdownServer, startServer } from "../../src/replicator/grpc-util.js";
import { connectRecoveryPoints, hydrateRemote } from "../../src/replicator/recovery-points-client.js";
import {
  masterTargetCommonName,
  operatorCommonName,
  serverCredentials,
  writeLoopbackPki,
} from "../../src/replicator/tls.js";

const point = { id: "p", seq: 1, timeUnixMs: 1, consistency: "crash" as const, group: "" };

function entry(path: string, kind: EntryKind, fields: Partial<PointEntry> = {}): HydrateReply {
  return {
    item: {
      $case: "entry",
      value: {
        path,
        kind,
        mode: 0o755,
        size: 0,
        linkTarget: "",
        hardLinkTo: "",
        attributes: undefined,
        rdevMajor: 0,
        rdevMinor: 0,
        ...fields,
      },
    },
  };
}
const dir = (path: string) => entry(path, EntryKind.ENTRY_KIND_DIRECTORY);
const file = (path: string, size = 0) => entry(path, EntryKind.ENTRY_KIND_FILE, { mode: 0o644, size });
const link = (path: string, target: string) => entry(path, EntryKind.ENTRY_KIND_SYMLINK, { linkTarget: target });
const chunk = (offset: number, text: string): HydrateReply => ({
  item: { $case: "chunk", value: { offset, data: Buffer.from(text) } },
});
const done: HydrateReply = { item: { $case: "done", value: true } };

describe("recovery points client: a hostile master target", function () {
  let work: string;
  let outside: string;
  let replies: (outsideDir: string) => HydrateReply[] = () => [];
  let client: RecoveryPointsClient;
  let close: () => Promise<void>;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "ksr-hostile-"));
    const pki = await writeLoopbackPki(join(work, "pki"), [masterTargetCommonName, operatorCommonName]);
    const serverTls = pki.get(masterTargetCommonName);
    const clientTls = pki.get(operatorCommonName);
    if (serverTls === undefined || clientTls === undefined) throw new Error("no identities");
    const unimplemented = (_call: unknown, callback: (error: { code: status; details: string }) => void) => {
      callback({ code: status.UNIMPLEMENTED, details: "not here" });
    };
    const hostile: RecoveryPointsServer = {
      listPoints: unimplemented,
      prune: unimplemented,
      rollback: unimplemented,
      hydrate(call) {
        for (const reply of replies(outside)) call.write(reply);
        call.end();
      },
    };
    const { server, port } = await startServer("localhost:0", await serverCredentials(serverTls), [
      [RecoveryPointsService, hostile],
    ]);
    client = await connectRecoveryPoints(`localhost:${port}`, clientTls);
    close = () => shutdownServer(server);
  });
  after(async () => {
    client.close();
    await close();
    await rm(work, { recursive: true, force: true });
  });
  beforeEach(async () => {
    outside = await mkdtemp(join(work, "outside-"));
  });

  const cases: [string, (outsideDir: string) => HydrateReply[], RegExp][] = [
    [
      "a write through a symlink it sent",
      (o) => [dir(""), link("a", o), file("a/evil", 1), chunk(0, "x"), done],
      /"a" is not a directory/,
    ],
    [
      "a deeper write through a symlink it sent",
      (o) => [dir(""), link("a", o), file("a/sub/evil", 1), chunk(0, "x"), done],
      /"a" is not a directory/,
    ],
    [
      "a directory replaced by a symlink, then written through",
      (o) => [dir(""), dir("d"), dir("d/sub"), link("d", o), file("d/sub/evil", 1), chunk(0, "x"), done],
      /"d" is not a directory/,
    ],
    ["a path escaping the destination", () => [dir(""), file("../evil"), done], /invalid path/],
    ["an absolute path", (o) => [dir(""), file(join(o, "evil")), done], /invalid path/],
    [
      "a hard link through a symlink",
      (o) => [dir(""), link("s", o), entry("h", EntryKind.ENTRY_KIND_FILE, { hardLinkTo: "s/x" }), done],
      /"s" is not a directory/,
    ],
    ["data beyond the file's size", () => [dir(""), file("f", 1), chunk(0, "too long"), done], /beyond the end/],
    ["a stream that ends early", () => [dir(""), file("f")], /ended the stream before the point was complete/],
  ];
  for (const [index, [name, make, reason]] of cases.entries()) {
    it(`refuses ${name} and writes nothing outside the destination`, async () => {
      replies = make;
      await mkdir(join(outside, "sub"));
      await assert.rejects(hydrateRemote(client, "m1", point, join(work, `dest-${index}`)), reason);
      assert.deepEqual(await readdir(outside), ["sub"]);
      assert.deepEqual(await readdir(join(outside, "sub")), []);
    });
  }
});
