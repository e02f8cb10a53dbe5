/**
 * Checks that this machine can reach and authenticate to the services: lists the
 * flavors, creates a dataset and finds it in the list of datasets.
 *
 *   node dist/examples/check-connection.js --dataset-address 127.0.0.1:50051 \
 *     --scheduler-address 127.0.0.1:50052 --api-key "$(cat .trainyard/dev-api-key)" \
 *     --tls-ca .trainyard/tls/ca.pem [--tls-cert .trainyard/tls/client.pem --tls-key .trainyard/tls/client-key.pem]
 *
 * What is left out comes from the environment as in TrainyardClient.connect
 * (TRAINYARD_API_KEY, TRAINYARD_TLS_CA, …, then a local stack's stack.json).
 * Prints one JSON line, {"ok": …} (exit status 0) or {"error": {code, message,
 * cause}} (exit status 1), the code being Connect's name for the gRPC status
 * ("Unauthenticated").
 */
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { Code, ConnectError } from "@connectrpc/connect";

import { type TlsOptions, TrainyardClient } from "../src/index.js";

const { values: args } = parseArgs({
  options: {
    "dataset-address": { type: "string" },
    "scheduler-address": { type: "string" },
    "api-key": { type: "string" },
    "tls-ca": { type: "string" },
    "tls-cert": { type: "string" },
    "tls-key": { type: "string" },
  },
});

const tlsFiles = [args["tls-ca"], args["tls-cert"], args["tls-key"]];
const tls: TlsOptions | undefined = tlsFiles.some((file) => file !== undefined)
  ? {
      ca: args["tls-ca"] && readFileSync(args["tls-ca"]),
      cert: args["tls-cert"] && readFileSync(args["tls-cert"]),
      key: args["tls-key"] && readFileSync(args["tls-key"]),
    }
  : undefined;

const client = TrainyardClient.connect({
  datasetAddress: args["dataset-address"],
  schedulerAddress: args["scheduler-address"],
  apiKey: args["api-key"],
  tls,
  timeoutMs: 10_000,
});

try {
  const { flavors } = await client.scheduler.listFlavors({}, { timeoutMs: client.timeoutMs });
  const dataset = await client.createDataset(`check-${randomUUID().slice(0, 8)}`, "made by check-connection");
  let listed = false;
  let pageToken = "";
  do {
    const page = await client.datasets.listDatasets({ pageSize: 1000, pageToken }, { timeoutMs: client.timeoutMs });
    listed ||= page.datasets.some((d) => d.id === dataset.id);
    pageToken = page.nextPageToken;
  } while (pageToken && !listed);
  console.log(JSON.stringify({ ok: { flavors: flavors.map((f) => f.id), datasetId: dataset.id, listed } }));
} catch (caught) {
  const error = ConnectError.from(caught);
  const cause = error.cause instanceof Error ? (error.cause as NodeJS.ErrnoException).code : undefined;
  console.log(JSON.stringify({ error: { code: Code[error.code], message: error.rawMessage, cause } }));
  process.exitCode = 1;
}
