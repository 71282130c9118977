// Block capture for disk images: a periodic hash scan of the whole image at the sync interval.
import { stat } from "node:fs/promises";
import { EntryKind } from "../../gen/ksr/replication/v1/replication.js";
import { emptyRecord, statIdentity, type Manifest } from "./manifest.js";
import type { ChangeSender } from "./sender.js";
import { sendChangedBlocks } from "./tree-source.js";

export class BlockSource {
  constructor(
    readonly image: string,
    private readonly manifest: Manifest,
    private readonly sender: ChangeSender,
  ) {}

  async scan(): Promise<void> {
    const stats = await stat(this.image, { bigint: true });
    if (!stats.isFile())
      throw new Error(`${this.image}: block capture reads image files (block devices are not supported yet)`);
    const size = Number(stats.size);
    const record = this.manifest.get("") ?? emptyRecord(EntryKind.ENTRY_KIND_FILE, 0);
    if (record.identity === statIdentity(stats)) return;
    if (record.size !== size) await this.sender.emit({ $case: "truncate", value: { path: "", size } });
    const complete = await sendChangedBlocks(this.image, "", size, record, this.sender);
    record.size = size;
    record.identity = complete ? statIdentity(stats) : "";
    this.manifest.set("", record);
  }
}
