/** watchTrainingJob: resumes from the last sequence after a dropped connection, and only then. */
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";

import { SchedulerService, type TrainingJobEvent, TrainingJobState, watchTrainingJob, type WatchTrainingJobRequest } from "../src/index.js";
import { FakeGrpcServer, inMemoryClient } from "./fakes.js";

const JOB = "job-1";

/** The events of a job of `total` events after `after`, up to `until` (default: all). */
function* eventsAfter(after: bigint, total: number, until = total) {
  for (let sequence = after + 1n; sequence <= until; sequence++) {
    yield { event: { jobId: JOB, sequence, final: sequence === BigInt(total) } };
  }
}

/** A scheduler whose first `failures` watches fail with `error` after sending `sendFirst` events. */
function flakyScheduler(options: { total: number; sendFirst: number; error: ConnectError; failures?: number }) {
  const requests: WatchTrainingJobRequest[] = [];
  const client = inMemoryClient(SchedulerService, {
    async *watchTrainingJob(request) {
      requests.push(request);
      const failing = requests.length <= (options.failures ?? 1);
      let sent = 0;
      for (const response of eventsAfter(request.afterSequence, options.total)) {
        if (failing && sent === options.sendFirst) {
          break;
        }
        yield response;
        sent += 1;
      }
      if (failing) {
        throw options.error;
      }
    },
  });
  return { client, requests };
}

async function collect(events: AsyncIterable<TrainingJobEvent>): Promise<number[]> {
  const sequences: number[] = [];
  for await (const event of events) {
    sequences.push(Number(event.sequence));
  }
  return sequences;
}

const dropped = () => new ConnectError("connection dropped", Code.Unavailable);

describe("watchTrainingJob", () => {
  it("resumes after UNAVAILABLE from the last sequence it yielded", async () => {
    const { client, requests } = flakyScheduler({ total: 5, sendFirst: 2, error: dropped() });
    const reconnects: bigint[] = [];
    const events = watchTrainingJob(client, JOB, { retryDelayMs: 1, onReconnect: (_, after) => reconnects.push(after) });
    assert.deepEqual(await collect(events), [1, 2, 3, 4, 5]);
    assert.deepEqual(
      requests.map((r) => [r.jobId, r.afterSequence]),
      [
        [JOB, 0n],
        [JOB, 2n],
      ],
    );
    assert.deepEqual(reconnects, [2n]);
  });

  it("starts after the given sequence and stops after the final event", async () => {
    const { client, requests } = flakyScheduler({ total: 5, sendFirst: 0, error: dropped(), failures: 0 });
    assert.deepEqual(await collect(watchTrainingJob(client, JOB, { afterSequence: 3 })), [4, 5]);
    assert.equal(requests.length, 1);
  });

  it("never yields an event twice, even if the server sends it again", async () => {
    const client = inMemoryClient(SchedulerService, {
      async *watchTrainingJob() {
        yield* eventsAfter(0n, 3, 1);
        yield* eventsAfter(0n, 3); // 1 again, then 2 and the final 3
      },
    });
    assert.deepEqual(await collect(watchTrainingJob(client, JOB)), [1, 2, 3]);
  });

  it("treats a stream that ends before the final event of a running job as a drop", async () => {
    let calls = 0;
    const client = inMemoryClient(SchedulerService, {
      async *watchTrainingJob(request) {
        calls += 1;
        // the first stream ends after event 2, which is not final
        yield* eventsAfter(request.afterSequence, 4, calls === 1 ? 2 : 4);
      },
      getTrainingJob: () => ({ trainingJob: { id: JOB, state: TrainingJobState.RUNNING, lastSequence: 2n } }),
    });
    assert.deepEqual(await collect(watchTrainingJob(client, JOB, { retryDelayMs: 1 })), [1, 2, 3, 4]);
    assert.equal(calls, 2);
  });

  it("ends at once, with nothing, when watching an ended job from its last sequence", async () => {
    let calls = 0;
    const client = inMemoryClient(SchedulerService, {
      async *watchTrainingJob() {
        calls += 1; // the scheduler ends such a watch at once, with no event
      },
      getTrainingJob: () => ({ trainingJob: { id: JOB, state: TrainingJobState.COMPLETED, lastSequence: 4n } }),
    });
    assert.deepEqual(await collect(watchTrainingJob(client, JOB, { afterSequence: 4, retryDelayMs: 1 })), []);
    assert.equal(calls, 1);
  });

  it("ends at once on an error that is not a dropped connection", async () => {
    const { client, requests } = flakyScheduler({
      total: 3,
      sendFirst: 1,
      error: new ConnectError("training job 'job-1' does not exist", Code.NotFound),
    });
    await assert.rejects(collect(watchTrainingJob(client, JOB, { retryDelayMs: 1 })), (error: ConnectError) => {
      assert.equal(error.code, Code.NotFound);
      return true;
    });
    assert.equal(requests.length, 1);
  });

  it("gives up once the server has been unreachable for reconnectMs", async () => {
    const { client, requests } = flakyScheduler({ total: 3, sendFirst: 0, error: dropped(), failures: Infinity });
    const started = Date.now();
    await assert.rejects(collect(watchTrainingJob(client, JOB, { reconnectMs: 100, retryDelayMs: 10 })), (error: ConnectError) => {
      assert.equal(error.code, Code.Unavailable);
      return true;
    });
    assert.ok(Date.now() - started >= 100);
    assert.ok(requests.length > 2, `${requests.length} attempts`);
  });

  it("stops when its signal is aborted, even while waiting to reconnect", async () => {
    const { client } = flakyScheduler({ total: 3, sendFirst: 1, error: dropped(), failures: Infinity });
    const controller = new AbortController();
    const watch = collect(watchTrainingJob(client, JOB, { retryDelayMs: 60_000, signal: controller.signal }));
    await sleep(20);
    controller.abort();
    await assert.rejects(watch, (error: ConnectError) => {
      assert.equal(error.code, Code.Canceled);
      return true;
    });
  });

  it("resumes over a real HTTP/2 connection that the server drops mid-stream", async () => {
    // The server sends events 1 and 2, then vanishes as a killed scheduler would:
    // Connect reports CANCELED ("http/2 stream closed"), not UNAVAILABLE.
    const requests: bigint[] = [];
    const fake = await FakeGrpcServer.start(SchedulerService, {
      async *watchTrainingJob(request) {
        requests.push(request.afterSequence);
        if (requests.length === 1) {
          yield* eventsAfter(0n, 4, 2);
          await sleep(50); // let the events reach the client
          fake.dropConnections();
          return;
        }
        yield* eventsAfter(request.afterSequence, 4);
      },
    });
    try {
      const errors: Code[] = [];
      const events = watchTrainingJob(fake.client(), JOB, { retryDelayMs: 10, onReconnect: (error) => errors.push(error.code) });
      assert.deepEqual(await collect(events), [1, 2, 3, 4]);
      assert.deepEqual(requests, [0n, 2n]);
      assert.equal(errors.length, 1); // Connect for Node.js reports this drop as CANCELED
    } finally {
      await fake.close();
    }
  });
});
