/**
 * Resilience: the watch's reconnection timer and backoff, HTTP/2 keepalive, what counts as a
 * lost connection, unreadable files in an upload, call options and default deadlines, retries
 * of idempotent reads, waiting for an ended job, and stack.json / TRAINYARD_TLS_* checks.
 */
import assert from "node:assert/strict";
import http2 from "node:http2";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";

import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";

import {
  DatasetService,
  defaultTls,
  grpcTransport,
  isConnectionLost,
  SchedulerService,
  TrainingJobState,
  TrainyardClient,
  type UploadImagesRequest,
  UploadStatus,
  watchTrainingJob,
  WatchTrainingJobResponseSchema,
} from "../src/index.js";
import { FakeGrpcServer, inMemoryClient } from "./fakes.js";

const JOB = "job-1";

/** A TrainyardClient over in-memory fakes of the two services. */
function clientOf(
  datasets: Parameters<typeof createRouterTransport>[0],
  scheduler: Parameters<typeof createRouterTransport>[0] = () => {},
  retries?: number,
): TrainyardClient {
  return new TrainyardClient(createRouterTransport(datasets), createRouterTransport(scheduler), undefined, retries);
}

/** One gRPC message frame: a flag byte, the length, the bytes. */
function frame(bytes: Uint8Array): Buffer {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(bytes.byteLength, 1);
  return Buffer.concat([prefix, bytes]);
}

describe("watchTrainingJob, reconnecting", () => {
  it("starts the down time afresh once a stream is established, even if no event comes", async () => {
    // 1st attempt: the connection drops at once (the down time starts). 2nd: the stream is
    // established (gRPC headers) and stays quiet longer than reconnectMs, then drops: the watch
    // must reconnect, not give up. 3rd: the final event.
    let attempts = 0;
    const server = http2.createServer();
    const sessions = new Set<http2.ServerHttp2Session>();
    server.on("session", (session) => sessions.add(session));
    server.on("stream", (stream) => {
      attempts += 1;
      if (attempts === 1) {
        stream.session?.destroy();
      } else if (attempts === 2) {
        stream.respond({ ":status": 200, "content-type": "application/grpc" });
        setTimeout(() => stream.session?.destroy(), 300);
      } else {
        stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
        stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
        const response = create(WatchTrainingJobResponseSchema, { event: { jobId: JOB, sequence: 1n, final: true } });
        stream.end(frame(toBinary(WatchTrainingJobResponseSchema, response)));
      }
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const client = createClient(SchedulerService, grpcTransport(`127.0.0.1:${(server.address() as AddressInfo).port}`));
      const sequences: bigint[] = [];
      for await (const event of watchTrainingJob(client, JOB, { reconnectMs: 150, retryDelayMs: 1 })) {
        sequences.push(event.sequence);
      }
      assert.deepEqual(sequences, [1n]);
      assert.equal(attempts, 3);
    } finally {
      sessions.forEach((session) => session.destroy());
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it("waits longer between attempts, up to maxRetryDelayMs", async () => {
    const times: number[] = [];
    const client = inMemoryClient(SchedulerService, {
      // eslint-disable-next-line require-yield
      async *watchTrainingJob() {
        times.push(Date.now());
        throw new ConnectError("connection dropped", Code.Unavailable);
      },
    });
    const watch = watchTrainingJob(client, JOB, { reconnectMs: 700, retryDelayMs: 20, maxRetryDelayMs: 160 });
    await assert.rejects(async () => {
      for await (const _ of watch) {
        // none
      }
    });
    const gaps = times.slice(1).map((t, i) => t - (times[i] ?? t));
    assert.ok(gaps.length >= 4, `${gaps.length} gaps`);
    assert.ok(Math.max(...gaps.slice(3)) >= 80, `gaps ${gaps}: they grow`);
    assert.ok(Math.max(...gaps) <= 160 * 1.5 + 50, `gaps ${gaps}: at most maxRetryDelayMs (+50 %)`);
    assert.ok((gaps[0] ?? 0) < 60, `gaps ${gaps}: the first is short`);
  });

  it("checks whether a job ended with a deadline", async () => {
    const deadlines: (number | undefined)[] = [];
    const client = inMemoryClient(SchedulerService, {
      async *watchTrainingJob() {
        // ends with no event
      },
      getTrainingJob(_, context) {
        deadlines.push(context.timeoutMs());
        return { trainingJob: { id: JOB, state: TrainingJobState.COMPLETED, lastSequence: 0n } };
      },
    });
    for await (const _ of watchTrainingJob(client, JOB)) {
      // none
    }
    assert.equal(deadlines.length, 1);
    assert.ok(deadlines[0] !== undefined && deadlines[0] <= 10_000 && deadlines[0] > 9_000, `${deadlines}`);
  });
});

describe("grpcTransport keepalive", () => {
  it("pings the server on a quiet stream", async () => {
    const fake = await FakeGrpcServer.start(SchedulerService, {
      async *watchTrainingJob() {
        await sleep(400);
        yield { event: { jobId: JOB, sequence: 1n, final: true } };
      },
    });
    let pings = 0;
    (fake as unknown as { server: http2.Http2Server }).server.on("session", (session) => session.on("ping", () => (pings += 1)));
    try {
      for await (const _ of watchTrainingJob(fake.client({ pingIntervalMs: 50, pingTimeoutMs: 1_000 }), JOB)) {
        // the one event
      }
      assert.ok(pings >= 2, `${pings} pings`);
    } finally {
      await fake.close();
    }
  });
});

describe("isConnectionLost, by the cause", () => {
  const failed = (code: string, extra: object = {}, status = Code.Internal) => {
    const cause = Object.assign(new Error(code), { code, ...extra });
    return new ConnectError(cause.message, status, undefined, undefined, cause);
  };

  it("is true for network errors", () => {
    for (const code of ["ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN", "ERR_HTTP2_STREAM_ERROR"]) {
      assert.equal(isConnectionLost(failed(code, { syscall: "connect" })), true, code);
    }
  });

  it("is false for TLS setup and file-system errors", () => {
    assert.equal(isConnectionLost(failed("ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED")), false);
    assert.equal(isConnectionLost(failed("ERR_SSL_WRONG_VERSION_NUMBER", {}, Code.Unknown)), false);
    assert.equal(isConnectionLost(failed("ENOENT", { syscall: "open", path: "/nope.png" })), false);
    assert.equal(isConnectionLost(failed("EACCES", { syscall: "stat" }, Code.Unknown)), false);
    assert.equal(isConnectionLost(failed("ENOENT")), false);
  });
});

describe("uploadImages, a file that cannot be read", () => {
  it("is rejected by the client, in its place, and the other files are stored", async () => {
    const headers: string[] = [];
    const client = clientOf(({ service }) =>
      service(DatasetService, {
        async uploadImages(requests: AsyncIterable<UploadImagesRequest>) {
          for await (const request of requests) {
            if (request.payload.case === "header") {
              headers.push(request.payload.value.fileName);
            }
          }
          return {
            results: headers.map((fileName) => ({ fileName, status: UploadStatus.STORED, imageId: `id-${fileName}` })),
            storedCount: headers.length,
          };
        },
      }),
    );
    const folder = await mkdtemp(path.join(tmpdir(), "trainyard-sdk-"));
    try {
      await writeFile(path.join(folder, "b.png"), "bb");
      const response = await client.uploadImages("ds-1", [
        { fileName: "a.png", label: "x", bytes: new Uint8Array([1]) },
        { fileName: "missing.png", label: "x", path: path.join(folder, "missing.png") },
        { fileName: "b.png", label: "x", path: path.join(folder, "b.png") },
        { fileName: "dir", label: "x", path: folder },
      ]);
      assert.deepEqual(headers, ["a.png", "b.png"]);
      assert.deepEqual(
        response.results.map((r) => [r.fileName, r.status, r.reason]),
        [
          ["a.png", UploadStatus.STORED, ""],
          ["missing.png", UploadStatus.REJECTED, "cannot read the file: no such file"],
          ["b.png", UploadStatus.STORED, ""],
          ["dir", UploadStatus.REJECTED, "cannot read the file: not a regular file"],
        ],
      );
      assert.deepEqual([response.storedCount, response.rejectedCount], [2, 2]);
    } finally {
      await rm(folder, { recursive: true });
    }
  });
});

describe("call options and deadlines", () => {
  it("give unary calls of the raw clients the default deadline, wrapper calls their own, streams none", async () => {
    const deadlines: Record<string, number | undefined> = {};
    const client = clientOf(
      () => {},
      ({ service }) =>
        service(SchedulerService, {
          listFlavors(_, context) {
            deadlines.listFlavors = context.timeoutMs();
            return {};
          },
          getTrainingJob(request, context) {
            deadlines[request.jobId] = context.timeoutMs();
            return { trainingJob: { id: request.jobId } };
          },
          async *watchTrainingJob(_, context) {
            deadlines.watch = context.timeoutMs();
            yield { event: { jobId: JOB, sequence: 1n, final: true } };
          },
        }),
    );
    await client.scheduler.listFlavors({});
    await client.getTrainingJob("own", { timeoutMs: 1_234 });
    await client.scheduler.getTrainingJob({ jobId: "raw-own" }, { timeoutMs: 2_345 });
    for await (const _ of client.watchTrainingJob(JOB)) {
      // the one event
    }
    assert.ok((deadlines.listFlavors ?? 0) > 59_000 && (deadlines.listFlavors ?? 0) <= 60_000, `${deadlines.listFlavors}`);
    assert.ok((deadlines.own ?? 0) > 1_000 && (deadlines.own ?? 0) <= 1_234, `${deadlines.own}`);
    assert.ok((deadlines["raw-own"] ?? 0) > 2_000 && (deadlines["raw-own"] ?? 0) <= 2_345);
    assert.equal(deadlines.watch, undefined);
  });

  it("pass the caller's signal", async () => {
    let created = 0;
    const client = clientOf(({ service }) =>
      service(DatasetService, {
        async createDataset() {
          created += 1;
          await sleep(5_000);
          return {};
        },
      }),
    );
    const controller = new AbortController();
    const call = client.createDataset("flowers", "", { signal: controller.signal });
    await sleep(20);
    controller.abort();
    await assert.rejects(call, (error: ConnectError) => error.code === Code.Canceled);
    assert.equal(created, 1);
  });
});

describe("retries", () => {
  it("retry idempotent reads while UNAVAILABLE, not other calls", async () => {
    let gets = 0;
    let creates = 0;
    const client = clientOf(
      ({ service }) =>
        service(DatasetService, {
          createDataset() {
            creates += 1;
            throw new ConnectError("down", Code.Unavailable);
          },
        }),
      ({ service }) =>
        service(SchedulerService, {
          getTrainingJob(request) {
            gets += 1;
            if (gets <= 2) {
              throw new ConnectError("down", Code.Unavailable);
            }
            return { trainingJob: { id: request.jobId } };
          },
        }),
    );
    assert.equal((await client.getTrainingJob(JOB)).id, JOB);
    assert.equal(gets, 3);
    await assert.rejects(client.createDataset("flowers"), (error: ConnectError) => error.code === Code.Unavailable);
    assert.equal(creates, 1);
  });

  it("give up after `retries`", async () => {
    let gets = 0;
    const client = clientOf(
      () => {},
      ({ service }) =>
        service(SchedulerService, {
          getTrainingJob() {
            gets += 1;
            throw new ConnectError("down", Code.Unavailable);
          },
        }),
      1,
    );
    await assert.rejects(client.getTrainingJob(JOB), (error: ConnectError) => error.code === Code.Unavailable);
    assert.equal(gets, 2);
  });
});

describe("waitForTrainingJob", () => {
  it("returns an ended job at once, without watching its (pruned) events", async () => {
    let watches = 0;
    const client = clientOf(
      () => {},
      ({ service }) =>
        service(SchedulerService, {
          getTrainingJob: (request) => ({ trainingJob: { id: request.jobId, state: TrainingJobState.COMPLETED, lastSequence: 9n } }),
          // eslint-disable-next-line require-yield
          async *watchTrainingJob() {
            watches += 1;
            throw new ConnectError("events pruned", Code.OutOfRange);
          },
        }),
    );
    assert.equal((await client.waitForTrainingJob(JOB)).state, TrainingJobState.COMPLETED);
    assert.equal(watches, 0);
  });

  it("watches a running job from its last event, and gets the job with the caller's signal", async () => {
    const after: bigint[] = [];
    let state = TrainingJobState.RUNNING;
    const client = clientOf(
      () => {},
      ({ service }) =>
        service(SchedulerService, {
          getTrainingJob: (request) => ({ trainingJob: { id: request.jobId, state, lastSequence: 4n } }),
          async *watchTrainingJob(request) {
            after.push(request.afterSequence);
            state = TrainingJobState.COMPLETED;
            yield { event: { jobId: JOB, sequence: 5n, final: true } };
          },
        }),
    );
    assert.equal((await client.waitForTrainingJob(JOB)).state, TrainingJobState.COMPLETED);
    assert.deepEqual(after, [4n]);
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(client.waitForTrainingJob(JOB, { signal: controller.signal }), (error: ConnectError) => error.code === Code.Canceled);
  });
});

describe("stack.json and TRAINYARD_TLS_*", () => {
  let folder = "";
  const file = (name: string) => path.join(folder, name);
  before(async () => {
    folder = await mkdtemp(path.join(tmpdir(), "trainyard-sdk-"));
    await writeFile(file("client.pem"), "CLIENT PEM");
    await writeFile(file("client-key.pem"), "KEY PEM");
  });
  after(async () => {
    await rm(folder, { recursive: true });
  });

  it("names a malformed stack.json", async () => {
    const dir = await mkdtemp(path.join(folder, "stack-"));
    await writeFile(path.join(dir, "stack.json"), "{ not json");
    assert.throws(() => defaultTls({ TRAINYARD_DATA_DIR: dir }), (error: Error) => error.message.includes(path.join(dir, "stack.json")));
  });

  it("refuses a client certificate without its key", async () => {
    const dir = await mkdtemp(path.join(folder, "stack-"));
    await writeFile(path.join(dir, "stack.json"), JSON.stringify({ tls_ca: file("client.pem"), tls_client_cert: file("client.pem") }));
    assert.throws(() => defaultTls({ TRAINYARD_DATA_DIR: dir }), /tls_client_key/);
    assert.throws(() => defaultTls({ TRAINYARD_TLS_CLIENT_CERT: file("client.pem"), TRAINYARD_DATA_DIR: folder }), /TRAINYARD_TLS_CLIENT_KEY/);
  });

  it("honours TRAINYARD_TLS_CLIENT_CERT/KEY without TRAINYARD_TLS_CA (Node.js's public CAs)", () => {
    const tls = defaultTls({
      TRAINYARD_TLS_CLIENT_CERT: file("client.pem"),
      TRAINYARD_TLS_CLIENT_KEY: file("client-key.pem"),
      TRAINYARD_DATA_DIR: folder,
    });
    assert.deepEqual([tls?.ca, String(tls?.cert), String(tls?.key)], [undefined, "CLIENT PEM", "KEY PEM"]);
  });
});
