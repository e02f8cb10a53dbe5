/** Connection settings: the API key on every call, TLS options, defaults from the environment. */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";

import {
  certificateRejected,
  defaultApiKey,
  defaultTls,
  grpcTransport,
  isConnectionLost,
  SchedulerService,
  TrainyardClient,
  watchTrainingJob,
} from "../src/index.js";
import { FakeGrpcServer } from "./fakes.js";

const KEY = "tyk_0123456789ab_abcdefghijklmnopqrstuvwxyz";

/** A scheduler that records each call's authorization header; its first watch drops after two events. */
async function recordingScheduler() {
  const seen: string[] = [];
  const fake: FakeGrpcServer<typeof SchedulerService> = await FakeGrpcServer.start(SchedulerService, {
    getTrainingJob(request, context) {
      seen.push(`get ${context.requestHeader.get("authorization")}`);
      return { trainingJob: { id: request.jobId } };
    },
    async *watchTrainingJob(request, context) {
      seen.push(`watch ${request.afterSequence} ${context.requestHeader.get("authorization")}`);
      const first = request.afterSequence === 0n;
      for (let sequence = request.afterSequence + 1n; sequence <= (first ? 2n : 3n); sequence++) {
        yield { event: { jobId: request.jobId, sequence, final: sequence === 3n } };
      }
      if (first) {
        await sleep(50); // let the events reach the client, then vanish like a killed scheduler
        fake.dropConnections();
      }
    },
  });
  return { fake, seen };
}

describe("apiKey", () => {
  it("is sent with every call, the watch's resumption included", async () => {
    const { fake, seen } = await recordingScheduler();
    try {
      const client = fake.client({ apiKey: KEY });
      await client.getTrainingJob({ jobId: "job-1" });
      const sequences: bigint[] = [];
      for await (const event of watchTrainingJob(client, "job-1", { retryDelayMs: 10 })) {
        sequences.push(event.sequence);
      }
      assert.deepEqual(sequences, [1n, 2n, 3n]);
      assert.deepEqual(seen, [`get Bearer ${KEY}`, `watch 0 Bearer ${KEY}`, `watch 2 Bearer ${KEY}`]);
    } finally {
      await fake.close();
    }
  });

  it("leaves a call's own authorization header alone, and is not sent when there is none", async () => {
    const { fake, seen } = await recordingScheduler();
    try {
      await fake.client({ apiKey: KEY }).getTrainingJob({ jobId: "job-1" }, { headers: { authorization: "Bearer other" } });
      await fake.client().getTrainingJob({ jobId: "job-1" });
      assert.deepEqual(seen, ["get Bearer other", "get null"]);
    } finally {
      await fake.close();
    }
  });
});

describe("defaults from the environment", () => {
  let folder = "";
  const file = (name: string) => path.join(folder, name);

  before(async () => {
    folder = await mkdtemp(path.join(tmpdir(), "trainyard-sdk-"));
    await writeFile(file("ca.pem"), "CA PEM");
    await writeFile(file("client.pem"), "CLIENT PEM");
    await writeFile(file("client-key.pem"), "KEY PEM");
    await writeFile(file("dev-api-key"), `${KEY}\n`);
  });
  after(async () => {
    await rm(folder, { recursive: true });
  });

  async function stackDir(info: object): Promise<string> {
    const dir = await mkdtemp(path.join(folder, "stack-"));
    await writeFile(path.join(dir, "stack.json"), JSON.stringify(info));
    return dir;
  }

  it("take the API key from TRAINYARD_API_KEY, else from the local stack's key file", async () => {
    const dir = await stackDir({ api_key_file: file("dev-api-key") });
    assert.equal(defaultApiKey({ TRAINYARD_API_KEY: "tyk_env", TRAINYARD_DATA_DIR: dir }), "tyk_env");
    assert.equal(defaultApiKey({ TRAINYARD_DATA_DIR: dir }), KEY);
    assert.equal(defaultApiKey({ TRAINYARD_DATA_DIR: folder }), undefined);
  });

  it("read TLS files named by TRAINYARD_TLS_*, else by the local stack", async () => {
    const fromEnv = defaultTls({
      TRAINYARD_TLS_CA: file("ca.pem"),
      TRAINYARD_TLS_CLIENT_CERT: file("client.pem"),
      TRAINYARD_TLS_CLIENT_KEY: file("client-key.pem"),
    });
    assert.deepEqual(
      [fromEnv?.ca, fromEnv?.cert, fromEnv?.key].map(String),
      ["CA PEM", "CLIENT PEM", "KEY PEM"],
    );
    assert.deepEqual(Object.keys(defaultTls({ TRAINYARD_TLS_CA: file("ca.pem"), TRAINYARD_DATA_DIR: folder }) ?? {}), ["ca"]);
    const dir = await stackDir({ tls_ca: file("ca.pem"), tls_client_cert: file("client.pem"), tls_client_key: file("client-key.pem") });
    assert.equal(String(defaultTls({ TRAINYARD_DATA_DIR: dir })?.key), "KEY PEM");
    assert.equal(defaultTls({ TRAINYARD_DATA_DIR: folder }), undefined);
  });

  it("refuse half a client certificate and name a file that cannot be read", () => {
    assert.throws(
      () => defaultTls({ TRAINYARD_TLS_CA: file("ca.pem"), TRAINYARD_TLS_CLIENT_CERT: file("client.pem") }),
      /needs both TRAINYARD_TLS_CLIENT_CERT and TRAINYARD_TLS_CLIENT_KEY/,
    );
    assert.throws(() => defaultTls({ TRAINYARD_TLS_CA: file("missing.pem") }), /^Error: TRAINYARD_TLS_CA=.*missing\.pem: /);
  });

  it("are what TrainyardClient.connect uses for what it is not given", async () => {
    const { fake, seen } = await recordingScheduler();
    const saved = { ...process.env };
    try {
      const url = `http://${fake.address}`;
      // The key comes from the stack; its TLS CA does not apply to an http:// URL, so it is never read.
      process.env.TRAINYARD_DATA_DIR = await stackDir({ api_key_file: file("dev-api-key"), tls_ca: file("missing.pem") });
      delete process.env.TRAINYARD_API_KEY;
      delete process.env.TRAINYARD_TLS_CA;
      await TrainyardClient.connect({ datasetAddress: url, schedulerAddress: url }).getTrainingJob("job-1");
      await TrainyardClient.connect({ datasetAddress: url, schedulerAddress: url, apiKey: "" }).getTrainingJob("job-1");
      assert.deepEqual(seen, [`get Bearer ${KEY}`, "get null"]);
      // For host:port, the stack's TLS settings apply, and a file it names must exist.
      assert.throws(() => TrainyardClient.connect({ datasetAddress: fake.address }), /stack\.json tls_ca=.*missing\.pem/);
    } finally {
      process.env = saved;
      await fake.close();
    }
  });
});

describe("grpcTransport", () => {
  it("refuses options that contradict each other", () => {
    assert.throws(() => grpcTransport("http://127.0.0.1:1", { tls: { ca: "x" } }), /plain-text \(http:\/\/\) address/);
    assert.throws(() => grpcTransport("https://127.0.0.1:1", { tls: false }), /TLS was turned off/);
    assert.throws(() => grpcTransport("127.0.0.1:1", { tls: { ca: "x", cert: "y" } }), /needs its private key/);
    grpcTransport("127.0.0.1:1", { tls: true, apiKey: KEY });
    grpcTransport("https://127.0.0.1:1");
  });
});

describe("certificateRejected", () => {
  it("tells an untrusted server certificate from a lost connection", () => {
    const cause = Object.assign(new Error("unable to verify the first certificate"), { code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE" });
    const untrusted = new ConnectError(cause.message, Code.Internal, undefined, undefined, cause);
    assert.equal(certificateRejected(untrusted), true);
    assert.equal(isConnectionLost(untrusted), false);
    const reset = Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" });
    const dropped = new ConnectError(reset.message, Code.Unavailable, undefined, undefined, reset);
    assert.equal(certificateRejected(dropped), false);
    assert.equal(isConnectionLost(dropped), true);
  });
});
