/**
 * A whole run through the SDK, for the end-to-end test and as an example:
 * create a dataset, upload a folder of <label>/<image> files, train a tiny job,
 * watch it to the end and read the model version.
 *
 *   node dist/examples/e2e.js --dataset-address 127.0.0.1:50051 \
 *     --scheduler-address 127.0.0.1:50052 --api-key "$(cat .trainyard/dev-api-key)" --images digits/
 *
 * What is left out (addresses, API key, TLS) comes from the environment, as in
 * TrainyardClient.connect.
 *
 * stdout is JSON lines: {"job": …} once created, {"event": …} per event (proto
 * JSON), then {"summary": …}. Reconnections are reported on stderr.
 */
import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";

import { toJson } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";

import {
  imagesInFolder,
  TrainingJobEventSchema,
  TrainingJobSchema,
  TrainingJobState,
  TrainingPreference,
  TrainyardClient,
  violations,
} from "../src/index.js";

const { values: args } = parseArgs({
  options: {
    "dataset-address": { type: "string" },
    "scheduler-address": { type: "string" },
    "api-key": { type: "string" },
    images: { type: "string" },
    "dataset-name": { type: "string", default: `ts-e2e-${randomUUID().slice(0, 8)}` },
    "max-epochs": { type: "string", default: "1" },
  },
});
if (!args.images) {
  throw new Error("--images DIR is required (a folder of <label>/<image> files)");
}

const client = TrainyardClient.connect({
  datasetAddress: args["dataset-address"],
  schedulerAddress: args["scheduler-address"],
  apiKey: args["api-key"],
});

// A refusal names every reason: three images of one class fail two S1 rules.
const small = await client.createDataset(`${args["dataset-name"]}-small`);
await client.uploadImages(small.id, (await imagesInFolder(args.images)).slice(0, 3));
const refusal = await client.createTrainingJob(small.id, { acceptFreeTerms: true }).then(
  () => undefined,
  (error: unknown) => ({ code: error instanceof ConnectError ? Code[error.code] : String(error), violations: violations(error) }),
);

const dataset = await client.createDataset(args["dataset-name"], "uploaded by the TypeScript SDK");
const uploads = await client.uploadFolder(dataset.id, args.images);
const settings = {
  requestId: randomUUID(),
  acceptFreeTerms: true,
  maxEpochs: Number(args["max-epochs"]),
  preference: TrainingPreference.PERFORMANCE_FIRST,
};
const job = await client.createTrainingJob(dataset.id, settings);
// The same request id again (a retry) returns the same job instead of a second one.
const retried = await client.createTrainingJob(dataset.id, settings);
console.log(JSON.stringify({ job: toJson(TrainingJobSchema, job) }));

const sequences: number[] = [];
let reconnects = 0;
for await (const event of client.watchTrainingJob(job.id, {
  onReconnect: (error, after) => {
    reconnects += 1;
    console.error(`connection lost (${error.message}); resuming after sequence ${after}`);
  },
})) {
  sequences.push(Number(event.sequence));
  console.log(JSON.stringify({ event: toJson(TrainingJobEventSchema, event) }));
}

const done = await client.getTrainingJob(job.id);
const model = done.state === TrainingJobState.COMPLETED ? await client.getModelVersion(dataset.id, done.modelVersion) : undefined;
const evaluation = model?.evaluation;
console.log(
  JSON.stringify({
    summary: {
      datasetId: dataset.id,
      stored: uploads.reduce((sum, r) => sum + r.storedCount, 0),
      rejected: uploads.reduce((sum, r) => sum + r.rejectedCount, 0),
      jobId: job.id,
      retriedJobId: retried.id,
      state: TrainingJobState[done.state],
      errorMessage: done.errorMessage,
      modelVersion: done.modelVersion,
      sequences,
      refusal,
      reconnects,
      evaluation: evaluation && {
        accuracy: evaluation.accuracy,
        macroF1: evaluation.macro?.f1,
        weightedF1: evaluation.weighted?.f1,
        validationSamples: Number(evaluation.validationSamples),
        classes: evaluation.classes.length,
      },
    },
  }),
);
