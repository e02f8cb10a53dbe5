/**
 * The request stream of DatasetService.UploadImages: the dataset id, then for each
 * file a header and its bytes in chunks of at most 1 MiB. Files given by path are
 * read from disk as they are sent, so an upload never holds more than a chunk of
 * a file in memory; one that cannot be opened is rejected by the client, alone.
 */
import { open, readdir } from "node:fs/promises";
import path from "node:path";

import { create } from "@bufbuild/protobuf";

import { type UploadResult, UploadResultSchema, UploadStatus } from "./gen/trainyard/dataset/v1/dataset_pb.js";
import {
  type UploadImagesRequest,
  UploadImagesRequestSchema,
  type UploadImagesResponse,
  UploadImagesResponseSchema,
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

/** A file given by path that could not be opened, so was not sent: its position among the files, and why. */
export interface UnreadableFile {
  /** Its position among the files given (0-based). */
  readonly index: number;
  readonly file: ImageFile;
  /** Why, for people: "cannot read the file: …". */
  readonly reason: string;
}

/**
 * The UploadImages request stream for some files. A file given by path is opened before its
 * header is sent; one that cannot be opened (missing, unreadable, not a regular file) is left
 * out and reported to `onUnreadable`, and the others go on (see withUnreadable).
 */
export async function* uploadRequests(
  datasetId: string,
  files: Iterable<ImageFile> | AsyncIterable<ImageFile>,
  onUnreadable: (unreadable: UnreadableFile) => void = () => {},
): AsyncGenerator<UploadImagesRequest> {
  yield create(UploadImagesRequestSchema, { datasetId });
  let index = -1;
  for await (const file of files) {
    index += 1;
    let pieces: Iterable<Uint8Array> | AsyncIterable<Uint8Array>;
    let sizeBytes: number;
    if ("bytes" in file) {
      pieces = [file.bytes];
      sizeBytes = file.bytes.byteLength;
    } else {
      const opened = await openFile(file.path);
      if (typeof opened === "string") {
        onUnreadable({ index, file, reason: opened });
        continue;
      }
      ({ pieces, sizeBytes } = opened);
    }
    // The size lets the server reject a file whose bytes do not add up.
    yield create(UploadImagesRequestSchema, {
      payload: {
        case: "header",
        value: { fileName: file.fileName, label: file.label ?? "", sizeBytes: BigInt(sizeBytes) },
      },
    });
    for await (const piece of pieces) {
      for (let start = 0; start < piece.byteLength; start += CHUNK_BYTES) {
        yield create(UploadImagesRequestSchema, {
          payload: { case: "chunk", value: piece.subarray(start, start + CHUNK_BYTES) },
        });
      }
    }
  }
}

/** A file opened for reading with its size, or why it cannot be read. */
async function openFile(file: string): Promise<{ pieces: AsyncIterable<Uint8Array>; sizeBytes: number } | string> {
  let handle;
  try {
    handle = await open(file, "r");
    const stats = await handle.stat();
    if (!stats.isFile()) {
      await handle.close();
      return "cannot read the file: not a regular file";
    }
    return { pieces: handle.createReadStream({ highWaterMark: CHUNK_BYTES }), sizeBytes: stats.size };
  } catch (error) {
    await handle?.close().catch(() => {});
    const { code, message } = error as NodeJS.ErrnoException;
    return `cannot read the file: ${code === "ENOENT" ? "no such file" : message}`;
  }
}

/**
 * The server's response with the files the client could not read put in: a rejected result
 * for each, at its place among the results (which are in upload order), and counted as rejected.
 */
export function withUnreadable(response: UploadImagesResponse, unreadable: readonly UnreadableFile[]): UploadImagesResponse {
  if (unreadable.length === 0) {
    return response;
  }
  const results: UploadResult[] = [];
  const answered = response.results[Symbol.iterator]();
  let next = 0;
  for (const { index, file, reason } of [...unreadable].sort((a, b) => a.index - b.index)) {
    for (; next < index; next++) {
      const result = answered.next();
      if (!result.done) {
        results.push(result.value);
      }
    }
    results.push(create(UploadResultSchema, { fileName: file.fileName, status: UploadStatus.REJECTED, reason }));
    next = index + 1;
  }
  results.push(...answered);
  return create(UploadImagesResponseSchema, {
    results,
    storedCount: response.storedCount,
    duplicateCount: response.duplicateCount,
    rejectedCount: response.rejectedCount + unreadable.length,
  });
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
