// The whole data path over real gRPC with mutual TLS on loopback, real files and fsync.
import { strict as assert } from "node:assert";
import { randomBytes } from "node:crypto";
import {
  appendFile,
  chmod,
  link,
  mkdir,
  open,
  readFile,
  rename,
  rm,
  stat,
  symlink,
  truncate,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import { credentials, Metadata, status, type ServiceError } from "@grpc/grpc-js";
import fc from "fast-check";
import { IngestClient, type OpenReply } from "../../src/gen/ksr/replication/v1/replication.js";
import type { Agent } from "../../src/replicator/agent/agent.js";
import { writeLoopbackPki, agentCommonName, clientCredentials } from "../../src/replicator/tls.js";
import {
  blockMachineId,
  converge,
  machineId,
  removeTestPipeline,
  startTestPipeline,
  type TestPipeline,
} from "../fixture/replication.js";
import { treesDiffer } from "../fixture/tree-compare.js";
import { propertyRuns } from "../fixture/property-runs.js";

async function populate(root: string): Promise<void> {
  await mkdir(join(root, "docs/deep/deeper"), { recursive: true });
  await writeFile(join(root, "docs/readme.txt"), "hello ".repeat(50_000));
  await writeFile(join(root, "docs/deep/random.bin"), randomBytes(300_000));
  await writeFile(join(root, "docs/deep/deeper/empty"), "");
  await writeFile(join(root, "secret"), "s3cret");
  await chmod(join(root, "secret"), 0o600);
  await chmod(join(root, "docs/deep"), 0o750);
  await symlink("docs/readme.txt", join(root, "readme-link"));
  await symlink("/nonexistent/target", join(root, "dangling"));
  await link(join(root, "secret"), join(root, "secret-hardlink"));
  const sparse = await open(join(root, "sparse.img"), "w");
  await sparse.write(Buffer.from("start"), 0, 5, 0);
  await sparse.write(Buffer.from("middle"), 0, 6, 20 * 1024 * 1024);
  await sparse.truncate(64 * 1024 * 1024);
  await sparse.close();
}

function openReply(client: IngestClient, machine = machineId): Promise<OpenReply> {
  return new Promise((resolve, reject) => {
    client.open(
      { machineId: machine, capture: undefined },
      new Metadata(),
      { deadline: Date.now() + 5000 },
      (error, reply) => {
        if (error) reject(error);
        else resolve(reply);
      },
    );
  });
}

describe("replicator pipeline (gRPC + mTLS on loopback)", function () {
  this.timeout(120_000);
  let pipeline: TestPipeline;

  beforeEach(async () => {
    pipeline = await startTestPipeline();
  });
  afterEach(() => removeTestPipeline(pipeline));

  it("initial replication gives a byte-exact replica: content, modes, symlinks, hard links, sparse regions", async () => {
    await populate(pipeline.source);
    const summary = await (await pipeline.agent()).run();
    assert.equal(await treesDiffer(pipeline.source, pipeline.target), "");
    const sparse = await stat(join(pipeline.target, "sparse.img"));
    assert.equal(sparse.size, 64 * 1024 * 1024);
    assert.ok(
      sparse.blocks * 512 < 1024 * 1024,
      `the sparse file's holes stay holes (${sparse.blocks * 512} bytes allocated)`,
    );
    assert.ok(summary.bytesPushed < 2_000_000, `only non-zero data travels (${summary.bytesPushed} bytes pushed)`);
  });

  it("a second --once run against an unchanged tree sends no file data", async () => {
    await populate(pipeline.source);
    await (await pipeline.agent()).run();
    const again = await (await pipeline.agent()).run();
    assert.ok(again.bytesPushed < 1000, `unchanged tree pushed ${again.bytesPushed} bytes`);
  });

  it("block mode replicates an image and then only its changed blocks", async () => {
    const image = join(pipeline.work, "source.img");
    const replica = join(pipeline.work, "target.img");
    const handle = await open(image, "w");
    await handle.write(randomBytes(3 * 65536), 0, 3 * 65536, 0);
    await handle.write(randomBytes(1000), 0, 1000, 5 * 1024 * 1024);
    await handle.truncate(8 * 1024 * 1024);
    await handle.close();
    const options = { machineId: blockMachineId, mode: "block" as const, source: image };
    const first = await (await pipeline.agent(options)).run();
    assert.ok((await readFile(replica)).equals(await readFile(image)));
    assert.ok(first.bytesPushed < 300_000, `zero blocks are not sent (${first.bytesPushed} bytes)`);

    const update = await open(image, "r+");
    await update.write(randomBytes(4096), 0, 4096, 70_000);
    await update.close();
    const second = await (await pipeline.agent(options)).run();
    assert.ok((await readFile(replica)).equals(await readFile(image)));
    assert.ok(second.bytesPushed < 70_000, `one changed block travels (${second.bytesPushed} bytes)`);
  });

  it("continuous replication follows a changing tree", async () => {
    await populate(pipeline.source);
    const agent = await pipeline.agent({ once: false });
    const running = agent.run();
    try {
      assert.equal(await converge(() => treesDiffer(pipeline.source, pipeline.target)), "");
      const s = pipeline.source;
      await appendFile(join(s, "docs/readme.txt"), "appended");
      await rename(join(s, "docs/deep"), join(s, "docs/moved"));
      await writeFile(join(s, "docs/moved/new.txt"), "new file in a moved directory");
      await truncate(join(s, "docs/moved/random.bin"), 1000);
      await chmod(join(s, "secret"), 0o640);
      await rm(join(s, "readme-link"));
      await mkdir(join(s, "readme-link"));
      await rm(join(s, "dangling"));
      await symlink("secret", join(s, "dangling"));
      await rename(join(s, "sparse.img"), join(s, "renamed.img"));
      const handle = await open(join(s, "renamed.img"), "r+");
      await handle.write(randomBytes(100_000), 0, 100_000, 10 * 1024 * 1024);
      await handle.close();
      assert.equal(await converge(() => treesDiffer(pipeline.source, pipeline.target)), "");
    } finally {
      agent.stop();
      await running;
    }
  });

  it("property: random operation sequences converge to a byte-exact replica", async () => {
    const agentLog: string[] = [];
    const agent = await pipeline.agent({
      once: false,
      log: { info: (m) => agentLog.push(m), warn: (m) => agentLog.push(m) },
    });
    const running = agent.run();
    const names = ["a", "b", "c", "d/e", "d/f"];
    const operation = fc.oneof(
      fc.record({
        kind: fc.constant("write" as const),
        name: fc.constantFrom(...names),
        offset: fc.nat(300_000),
        size: fc.integer({ min: 1, max: 150_000 }),
      }),
      fc.record({ kind: fc.constant("truncate" as const), name: fc.constantFrom(...names), size: fc.nat(400_000) }),
      fc.record({ kind: fc.constant("remove" as const), name: fc.constantFrom(...names, "d") }),
      fc.record({
        kind: fc.constant("rename" as const),
        from: fc.constantFrom(...names, "d"),
        to: fc.constantFrom(...names, "d", "g"),
      }),
      fc.record({
        kind: fc.constant("chmod" as const),
        name: fc.constantFrom(...names),
        mode: fc.constantFrom(0o600, 0o644, 0o755),
      }),
      fc.record({
        kind: fc.constant("symlink" as const),
        name: fc.constantFrom(...names),
        target: fc.constantFrom("a", "../x", "d"),
      }),
    );
    type Operation = typeof operation extends fc.Arbitrary<infer T> ? T : never;
    const apply = async (op: Operation): Promise<void> => {
      const path = (name: string) => join(pipeline.source, name);
      await mkdir(path("d"), { recursive: true }).catch(() => undefined);
      switch (op.kind) {
        case "write": {
          const handle = await open(path(op.name), "a+").then(async (h) => {
            await h.close();
            return open(path(op.name), "r+");
          });
          await handle.write(randomBytes(op.size), 0, op.size, op.offset);
          await handle.close();
          return;
        }
        case "truncate":
          await truncate(path(op.name), op.size);
          return;
        case "remove":
          await rm(path(op.name), { recursive: true, force: true });
          return;
        case "rename":
          await rename(path(op.from), path(op.to));
          return;
        case "chmod":
          await chmod(path(op.name), op.mode);
          return;
        case "symlink":
          await rm(path(op.name), { recursive: true, force: true });
          await symlink(op.target, path(op.name));
          return;
      }
    };
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(operation, { minLength: 1, maxLength: 12 }), async (operations) => {
          for (const op of operations) await apply(op).catch(() => undefined); // invalid moves are part of the fuzz
          const difference = await converge(() => treesDiffer(pipeline.source, pipeline.target));
          assert.equal(
            difference,
            "",
            `${difference}\nagent log:\n${agentLog.join("\n")}\n${pipeline.warnings.join("\n")}`,
          );
        }),
        propertyRuns(12),
      );
    } finally {
      agent.stop();
      await running;
    }
  });

  it("refuses plaintext clients, clients of another CA and agents of another machine", async () => {
    const address = `localhost:${pipeline.processServerPort}`;
    const plaintext = new IngestClient(address, credentials.createInsecure());
    await assert.rejects(openReply(plaintext), (error: ServiceError) => error.code === status.UNAVAILABLE);
    plaintext.close();

    const strangers = await writeLoopbackPki(join(pipeline.work, "stranger-pki"), [agentCommonName(machineId)]);
    const stranger = new IngestClient(address, await clientCredentials(strangers.get(agentCommonName(machineId))!));
    await assert.rejects(openReply(stranger), (error: ServiceError) => error.code === status.UNAVAILABLE);
    stranger.close();

    const otherAgent = pipeline.tls.get(agentCommonName("other"))!;
    const impostor = new IngestClient(address, await clientCredentials(otherAgent));
    await assert.rejects(
      openReply(impostor, machineId),
      (error: ServiceError) =>
        error.code === status.PERMISSION_DENIED &&
        error.details.includes(`the agent of machine other may not push for machine ${machineId}`),
    );
    impostor.close();
  });

  it("a master target outage longer than the cache limit ends in a resync, not a failure", async () => {
    await pipeline.close();
    await pipeline.startMasterTarget();
    await pipeline.startProcessServer({ cacheLimitBytes: 2 * 1024 * 1024 });
    await populate(pipeline.source);
    await (await pipeline.agent()).run();
    await pipeline.stopMasterTarget();

    const agent: Agent = await pipeline.agent({ once: false });
    const running = agent.run();
    try {
      for (let i = 0; i < 6; i++) await writeFile(join(pipeline.source, `outage-${i}.bin`), randomBytes(1024 * 1024));
      await converge(
        () => Promise.resolve(pipeline.warnings.some((w) => w.includes("over its limit")) ? "" : "waiting"),
        20_000,
      );
      assert.ok(
        pipeline.warnings.some((w) => w.includes("over its limit")),
        pipeline.warnings.join("\n"),
      );
      await pipeline.startMasterTarget();
      assert.equal(await converge(() => treesDiffer(pipeline.source, pipeline.target)), "");
    } finally {
      agent.stop();
      await running;
    }
  });
});
