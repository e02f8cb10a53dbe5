/**
 * Watching a job: SchedulerService.WatchTrainingJob, resumed from the last
 * sequence seen whenever the connection drops (for example while the scheduler
 * restarts), so that the caller sees every event exactly once, in order.
 */
import { setTimeout as sleep } from "node:timers/promises";

import { type Client, Code, ConnectError } from "@connectrpc/connect";

import { isConnectionLost } from "./errors.js";
import { type TrainingJobEvent, TrainingJobState } from "./gen/trainyard/scheduler/v1/scheduler_pb.js";
import type { SchedulerService } from "./gen/trainyard/scheduler/v1/scheduler_service_pb.js";

/** Options of watchTrainingJob. */
export interface WatchOptions {
  /** Start after this sequence number; 0 (the default) for all events. */
  readonly afterSequence?: bigint | number;
  /** Give up when the connection has been down this long, in ms (default 120 000). */
  readonly reconnectMs?: number;
  /**
   * Pause before the first reconnection attempt after a drop, in ms (default 500); it doubles
   * with each failed attempt, up to `maxRetryDelayMs`, with ±50 % jitter.
   */
  readonly retryDelayMs?: number;
  /** Longest pause between reconnection attempts, in ms (default 5 000). */
  readonly maxRetryDelayMs?: number;
  /** Stops the watch; the generator then throws a CANCELED ConnectError. */
  readonly signal?: AbortSignal;
  /** Called before each reconnection attempt, with the error that dropped the stream. */
  readonly onReconnect?: (error: ConnectError, afterSequence: bigint) => void;
}

/**
 * The job's events after `afterSequence`, up to and including the final one (none
 * when `afterSequence` is an ended job's last sequence: the scheduler ends the
 * stream at once).
 *
 * A lost connection (see isConnectionLost: UNAVAILABLE, or a stream the HTTP/2
 * connection took down with it) is not an error: the watch starts again after the
 * last sequence it yielded, and only fails once the server has been unreachable
 * for `reconnectMs`. Any other error (NOT_FOUND,
 * OUT_OF_RANGE, …) ends the watch at once.
 */
export async function* watchTrainingJob(
  scheduler: Client<typeof SchedulerService>,
  jobId: string,
  options: WatchOptions = {},
): AsyncGenerator<TrainingJobEvent, void, undefined> {
  const reconnectMs = options.reconnectMs ?? 120_000;
  const retryDelayMs = options.retryDelayMs ?? 500;
  const maxRetryDelayMs = Math.max(options.maxRetryDelayMs ?? 5_000, retryDelayMs);
  let sequence = BigInt(options.afterSequence ?? 0);
  // When the connection went down (undefined: it is up), and the failed attempts since then.
  let downSince: number | undefined;
  let attempts = 0;
  const connected = () => {
    downSince = undefined;
    attempts = 0;
  };
  for (;;) {
    try {
      const stream = scheduler.watchTrainingJob(
        { jobId, afterSequence: sequence },
        {
          signal: options.signal,
          // The stream is established once the server's response headers arrive (a gRPC error
          // without a message comes as headers with grpc-status instead: "trailers-only"), even
          // if no event follows for a long time (a queued job): the next drop starts a new count.
          onHeader: (header) => {
            if (streamEstablished(header)) {
              connected();
            }
          },
        },
      );
      for await (const response of stream) {
        connected();
        const event = response.event;
        if (event === undefined || event.sequence <= sequence) {
          continue; // never yield an event twice, whatever the server resends
        }
        sequence = event.sequence;
        yield event;
        if (event.final) {
          return;
        }
      }
      // Ended with OK and no final event: either the job had ended at `sequence` (the scheduler
      // ends a watch from an ended job's last sequence at once: nothing follows), or something
      // between us and the scheduler ended the stream early, which is as good as a drop.
      if (await endedAt(scheduler, jobId, sequence, options.signal)) {
        return;
      }
      throw new ConnectError("watch ended before the job's final event", Code.Unavailable);
    } catch (caught) {
      const error = ConnectError.from(caught);
      if (options.signal?.aborted || !isConnectionLost(error)) {
        throw error;
      }
      downSince ??= Date.now();
      if (Date.now() - downSince > reconnectMs) {
        throw error;
      }
      options.onReconnect?.(error, sequence);
      const delay = Math.min(retryDelayMs * 2 ** attempts, maxRetryDelayMs) * (0.5 + Math.random());
      attempts += 1;
      try {
        await sleep(delay, undefined, { signal: options.signal });
      } catch (aborted) {
        throw new ConnectError("watch aborted", Code.Canceled, undefined, undefined, aborted);
      }
    }
  }
}

/**
 * Whether response headers say the stream is up: gRPC headers without a status. An error
 * sent before any message arrives as "trailers-only" headers, which carry `grpc-status`.
 */
function streamEstablished(header: Headers): boolean {
  return /^application\/grpc/i.test(header.get("content-type") ?? "") && !header.has("grpc-status");
}

/** The states of a job that has ended. */
export const FINAL_STATES: ReadonlySet<TrainingJobState> = new Set([TrainingJobState.COMPLETED, TrainingJobState.FAILED, TrainingJobState.CANCELLED]);

/** Deadline of the GetTrainingJob call that checks whether a quiet stream's job has ended, in ms. */
const ENDED_AT_TIMEOUT_MS = 10_000;

/** Whether the job has ended and `sequence` is its last event; false when that cannot be told now. */
async function endedAt(
  scheduler: Client<typeof SchedulerService>,
  jobId: string,
  sequence: bigint,
  signal: AbortSignal | undefined,
): Promise<boolean> {
  try {
    // A deadline, so that a connection that stopped answering cannot hang the watch here.
    const { trainingJob } = await scheduler.getTrainingJob({ jobId }, { signal, timeoutMs: ENDED_AT_TIMEOUT_MS });
    return trainingJob !== undefined && FINAL_STATES.has(trainingJob.state) && sequence >= trainingJob.lastSequence;
  } catch (caught) {
    const error = ConnectError.from(caught);
    if (isConnectionLost(error) || (error.code === Code.DeadlineExceeded && !signal?.aborted)) {
      return false; // the scheduler went away meanwhile, or did not answer: reconnect as after a drop
    }
    throw caught;
  }
}
