/** TrainyardClient: the upload stream, request ids, error details. */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, it } from "node:test";

import { Code, ConnectError, createRouterTransport } from "@connectrpc/connect";

import { PreconditionFailureSchema } from "../src/gen/google/rpc/error_details_pb.js";
import {
  CHUNK_BYTES,
  type CreateTrainingJobRequest,
  DatasetService,
  imagesInFolder,
  isConnectionLost,
  SchedulerService,
  TrainyardClient,
  type UploadImagesRequest,
  violations,
} from "../src/index.js";
import { FakeGrpcServer } from "./fakes.js";

/** A TrainyardClient over in-memory fakes of the two services. */
function clientOf(
  datasets: Parameters<typeof createRouterTransport>[0],
  scheduler: Parameters<typeof createRouterTransport>[0] = () => {},
): TrainyardClient {
  return new TrainyardClient(createRouterTransport(datasets), createRouterTransport(scheduler));
}

function bytes(length: number, seed: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 31 + seed) % 251);
}

describe("uploadImages", () => {
  it("sends the dataset id, then per file a header and chunks of at most 1 MiB", async () => {
    const seen: UploadImagesRequest[] = [];
    const client = clientOf(({ service }) =>
      service(DatasetService, {
        async uploadImages(requests) {
          for await (const request of requests) {
            seen.push(request);
          }
          return { storedCount: 2 };
        },
      }),
    );
    const folder = await mkdtemp(path.join(tmpdir(), "trainyard-sdk-"));
    try {
      const big = bytes(2.5 * CHUNK_BYTES, 1);
      const onDisk = bytes(CHUNK_BYTES + 1, 2);
      await writeFile(path.join(folder, "seven.png"), onDisk);
      const response = await client.uploadImages("ds-1", [
        { fileName: "big.png", label: "3", bytes: big },
        { fileName: "seven.png", label: "7", path: path.join(folder, "seven.png") },
      ]);
      assert.equal(response.storedCount, 2);
    } finally {
      await rm(folder, { recursive: true });
    }

    const shape = seen.map((r) =>
      r.payload.case === "header"
        ? `header ${r.payload.value.fileName} ${r.payload.value.label} ${r.payload.value.sizeBytes}`
        : r.payload.case === "chunk"
          ? `chunk ${r.payload.value.byteLength}`
          : `dataset ${r.datasetId}`,
    );
    assert.deepEqual(shape, [
      "dataset ds-1",
      `header big.png 3 ${2.5 * CHUNK_BYTES}`,
      `chunk ${CHUNK_BYTES}`,
      `chunk ${CHUNK_BYTES}`,
      `chunk ${CHUNK_BYTES / 2}`,
      `header seven.png 7 ${CHUNK_BYTES + 1}`,
      `chunk ${CHUNK_BYTES}`,
      "chunk 1",
    ]);
    const sent = Buffer.concat(seen.slice(2, 5).map((r) => (r.payload.case === "chunk" ? r.payload.value : new Uint8Array())));
    assert.ok(sent.equals(bytes(2.5 * CHUNK_BYTES, 1)), "the bytes arrive unchanged and in order");
  });

  it("finds a folder's images with their labels", async () => {
    const folder = await mkdtemp(path.join(tmpdir(), "trainyard-sdk-"));
    try {
      await mkdir(path.join(folder, "cat"));
      await mkdir(path.join(folder, "dog"));
      await writeFile(path.join(folder, "dog", "b.JPG"), "x");
      await writeFile(path.join(folder, "cat", "a.png"), "x");
      await writeFile(path.join(folder, "cat", "notes.txt"), "x");
      await writeFile(path.join(folder, "loose.webp"), "x");
      const files = await imagesInFolder(folder);
      assert.deepEqual(
        files.map((f) => [f.fileName, f.label]),
        [
          ["cat/a.png", "cat"],
          ["dog/b.JPG", "dog"],
          ["loose.webp", ""],
        ],
      );
    } finally {
      await rm(folder, { recursive: true });
    }
  });
});

describe("createTrainingJob", () => {
  it("sends a new request id unless given one, so that a retry can reuse it", async () => {
    const requests: CreateTrainingJobRequest[] = [];
    const client = clientOf(
      () => {},
      ({ service }) =>
        service(SchedulerService, {
          createTrainingJob(request) {
            requests.push(request);
            return { trainingJob: { id: `job-for-${request.requestId}`, datasetId: request.datasetId } };
          },
        }),
    );
    await client.createTrainingJob("ds-1", { acceptFreeTerms: true });
    await client.createTrainingJob("ds-1", { acceptFreeTerms: true });
    const job = await client.createTrainingJob("ds-1", { requestId: "mine", maxEpochs: 1 });
    assert.equal(job.id, "job-for-mine");
    const [first, second, third] = requests;
    assert.ok(first?.requestId && second?.requestId && first.requestId !== second.requestId);
    assert.equal(third?.requestId, "mine");
    assert.equal(third?.maxEpochs, 1);
    assert.equal(first?.acceptFreeTerms, true);
  });
});

describe("errors", () => {
  it("reads every failing rule from a refusal's details, over gRPC", async () => {
    const fake = await FakeGrpcServer.start(SchedulerService, {
      createTrainingJob() {
        throw new ConnectError("dataset cannot be trained", Code.FailedPrecondition, undefined, [
          {
            desc: PreconditionFailureSchema,
            value: {
              violations: [
                { type: "S1", description: "1 class; at least 2 are needed" },
                { type: "S1", description: "class '3' has 3 images; at least 5 are needed" },
              ],
            },
          },
        ]);
      },
    });
    try {
      const error = await fake.client().createTrainingJob({ datasetId: "ds-1" }).then(
        () => assert.fail("the call should fail"),
        (caught: unknown) => ConnectError.from(caught),
      );
      assert.equal(error.code, Code.FailedPrecondition);
      assert.deepEqual(violations(error), [
        { subject: "S1", description: "1 class; at least 2 are needed" },
        { subject: "S1", description: "class '3' has 3 images; at least 5 are needed" },
      ]);
      assert.equal(isConnectionLost(error), false);
    } finally {
      await fake.close();
    }
  });

  it("tells a lost connection from a status the server sent", () => {
    assert.equal(isConnectionLost(new ConnectError("no route", Code.Unavailable)), true);
    assert.equal(isConnectionLost(new ConnectError("http/2 stream closed with error code CANCEL", Code.Canceled)), true);
    const sent = (code: Code) => new ConnectError("from the server", code, { "grpc-status": String(code) });
    assert.equal(isConnectionLost(sent(Code.Unavailable)), true);
    assert.equal(isConnectionLost(sent(Code.Internal)), false);
    assert.equal(isConnectionLost(sent(Code.Canceled)), false);
    assert.equal(isConnectionLost(new ConnectError("deadline", Code.DeadlineExceeded)), false);
    assert.equal(isConnectionLost(new ConnectError("not found", Code.NotFound)), false);
  });
});
