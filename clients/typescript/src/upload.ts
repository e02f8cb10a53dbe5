/**
 * The request stream of DatasetService.UploadImages: the dataset id, then for each
 * file a header and its bytes in chunks of at most 1 MiB. Files given by path are
 * read from disk as they are sent, so an upload never holds more than a chunk of
 * a file in memory.
 */
import { createReadStream } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import path from "node:path";

import { create } from "@bufbuild/protobuf";

import {
  type UploadImagesRequest,
  UploadImagesRequestSchema,
} from "./gen/trainyard/dataset/v1/dataset_service_pb.js";

/** Bytes per chunk message (the API recommends at most 1 MiB). */
export const CHUNK_BYTES = 1 << 20;

/** File name suffixes uploadFolder picks up (the formats the dataset service decodes). */
export const IMAGE_SUFFIXES: ReadonlySet<string> = new Set([".png", ".jpg", ".jpeg", ".bmp", ".webp"]);

/** One image to upload: its name, its label (empty or absent: unlabeled), and its bytes or its path. */
export type ImageFile = {
  readonly fileName: string;
  readonly label?: string;
} & ({ readonly bytes: Uint8Array } | { readonly path: string });

/** The UploadImages request stream for some files. */
export async function* uploadRequests(
  datasetId: string,
  files: Iterable<ImageFile> | AsyncIterable<ImageFile>,
): AsyncGenerator<UploadImagesRequest> {
  yield create(UploadImagesRequestSchema, { datasetId });
  for await (const file of files) {
    // The size lets the server reject a file whose bytes do not add up.
    const sizeBytes = "bytes" in file ? file.bytes.byteLength : (await stat(file.path)).size;
    yield create(UploadImagesRequestSchema, {
      payload: {
        case: "header",
        value: { fileName: file.fileName, label: file.label ?? "", sizeBytes: BigInt(sizeBytes) },
      },
    });
    const pieces: Iterable<Uint8Array> | AsyncIterable<Uint8Array> =
      "bytes" in file ? [file.bytes] : createReadStream(file.path, { highWaterMark: CHUNK_BYTES });
    for await (const piece of pieces) {
      for (let start = 0; start < piece.byteLength; start += CHUNK_BYTES) {
        yield create(UploadImagesRequestSchema, {
          payload: { case: "chunk", value: piece.subarray(start, start + CHUNK_BYTES) },
        });
      }
    }
  }
}

/**
 * The images of a folder laid out as <label>/<image>, sorted by path; images
 * directly in the folder are unlabeled. File names are the paths relative to the folder.
 */
export async function imagesInFolder(folder: string): Promise<ImageFile[]> {
  const entries = await readdir(folder, { recursive: true, withFileTypes: true });
  const files: ImageFile[] = [];
  for (const entry of entries) {
    if (!entry.isFile() || !IMAGE_SUFFIXES.has(path.extname(entry.name).toLowerCase())) {
      continue;
    }
    // `parentPath` is Node 20.12+; `path` is its older, deprecated name.
    const parent = (entry as { parentPath?: string }).parentPath ?? entry.path;
    const full = path.join(parent, entry.name);
    const relative = path.relative(folder, full);
    const label = path.dirname(relative) === "." ? "" : path.basename(path.dirname(relative));
    files.push({ fileName: relative.split(path.sep).join("/"), label, path: full });
  }
  return files.sort((a, b) => (a.fileName < b.fileName ? -1 : a.fileName > b.fileName ? 1 : 0));
}
