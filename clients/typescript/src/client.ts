/**
 * TrainyardClient: the common steps of a training run in a few typed calls.
 * Everything else is one call away on `datasets` and `scheduler`, the typed
 * Connect clients of the two public services.
 */
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

import type { DescService, MessageInitShape } from "@bufbuild/protobuf";
import { type CallOptions, type Client, Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";

import { defaultAddresses, defaultApiKey, defaultTls, grpcTransport, type TransportOptions } from "./connection.js";
import type { Dataset } from "./gen/trainyard/dataset/v1/dataset_pb.js";
import { DatasetService, type UploadImagesResponse } from "./gen/trainyard/dataset/v1/dataset_service_pb.js";
import type { ModelVersion, TrainingJob, TrainingJobEvent } from "./gen/trainyard/scheduler/v1/scheduler_pb.js";
import {
  type CreateTrainingJobRequestSchema,
  SchedulerService,
} from "./gen/trainyard/scheduler/v1/scheduler_service_pb.js";
import { isConnectionLost } from "./errors.js";
import { type ImageFile, imagesInFolder, type UnreadableFile, uploadRequests, withUnreadable } from "./upload.js";
import { FINAL_STATES, type WatchOptions, watchTrainingJob } from "./watch.js";

/** How to reach the services and authenticate to them; what is left out comes from the environment. */
export interface ConnectOptions extends TransportOptions {
  /** host:port (or an http(s):// URL) of the dataset service; see defaultAddresses. */
  readonly datasetAddress?: string;
  /** host:port (or an http(s):// URL) of the scheduler; see defaultAddresses. */
  readonly schedulerAddress?: string;
  /**
   * Deadline of each unary call in ms (default 60 000), the calls of `datasets` and `scheduler`
   * included, unless the call gives its own `timeoutMs`; uploads and job creation get more.
   */
  readonly timeoutMs?: number;
  /** Retries of an idempotent read (Get…, List…) while the connection is lost or UNAVAILABLE (default 4). */
  readonly retries?: number;
}

/** Retries of idempotent reads, and the first pause before one in ms (it doubles, with jitter), as in the Python SDK. */
const DEFAULT_RETRIES = 4;
const RETRY_BACKOFF_MS = 200;

/**
 * Settings of a training job; unset ones take the source document's defaults
 * (ratio "0.8", 60 minutes, BALANCE, the free flavor). `trainRatio` left undefined
 * is not sent (0.8); any string given, even "", is sent and checked by the server
 * (S3: "" is refused with INVALID_ARGUMENT). `requestId` defaults to a
 * new UUID: pass your own to make a retried creation return the same job.
 */
export type TrainingJobOptions = Omit<MessageInitShape<typeof CreateTrainingJobRequestSchema>, "$typeName" | "datasetId">;

/** Options of uploadFolder; the call options apply to each stream. */
export interface UploadFolderOptions extends CallOptions {
  /** Files per UploadImages stream (default 500). */
  readonly batch?: number;
  /** Called after each stream with its response and the files done so far. */
  readonly onBatch?: (response: UploadImagesResponse, done: number, total: number) => void;
}

export class TrainyardClient {
  /** The typed DatasetService client, for the calls the wrapper does not cover. */
  readonly datasets: Client<typeof DatasetService>;
  /** The typed SchedulerService client, for the calls the wrapper does not cover. */
  readonly scheduler: Client<typeof SchedulerService>;

  /**
   * A client over given transports (TLS, in-memory fakes in tests); see `connect` for the usual case.
   * Unary calls of `datasets` and `scheduler` get the deadline `timeoutMs` unless they give their
   * own, and idempotent reads (Get…, List…) are retried `retries` times, with backoff, while the
   * connection is lost or the service UNAVAILABLE.
   */
  constructor(
    datasetTransport: Transport,
    schedulerTransport: Transport,
    readonly timeoutMs = 60_000,
    readonly retries = DEFAULT_RETRIES,
  ) {
    this.datasets = withDefaults(DatasetService, createClient(DatasetService, datasetTransport), timeoutMs, retries);
    this.scheduler = withDefaults(SchedulerService, createClient(SchedulerService, schedulerTransport), timeoutMs, retries);
  }

  /**
   * A client of the services at the given addresses, with the given API key and TLS
   * settings. What is left out comes from the environment like in the Python SDK:
   * defaultAddresses, defaultApiKey (TRAINYARD_API_KEY) and defaultTls
   * (TRAINYARD_TLS_CA, TRAINYARD_TLS_CLIENT_CERT/KEY), then a local stack's stack.json.
   * Pass `apiKey: ""` or `tls: false` to turn a default off. Throws when a named
   * certificate file cannot be read or the options contradict each other.
   */
  static connect(options: ConnectOptions = {}): TrainyardClient {
    const addresses = once(defaultAddresses);
    const apiKey = once(defaultApiKey);
    const tls = once(defaultTls);
    const transport = (address: string) =>
      grpcTransport(address, {
        apiKey: options.apiKey ?? apiKey(),
        // An http:// URL says plain text: default TLS settings apply to the other addresses.
        tls: options.tls ?? (/^http:\/\//i.test(address) ? undefined : tls()),
        interceptors: options.interceptors,
        pingIntervalMs: options.pingIntervalMs,
        pingTimeoutMs: options.pingTimeoutMs,
        pingIdleConnection: options.pingIdleConnection,
      });
    return new TrainyardClient(
      transport(options.datasetAddress ?? addresses().dataset),
      transport(options.schedulerAddress ?? addresses().scheduler),
      options.timeoutMs,
      options.retries,
    );
  }

  // datasets -------------------------------------------------------------------

  /** Creates a dataset. INVALID_ARGUMENT for a bad name; ALREADY_EXISTS if it is taken. */
  async createDataset(displayName: string, description = "", options: CallOptions = {}): Promise<Dataset> {
    const response = await this.datasets.createDataset({ displayName, description }, options);
    return present(response.dataset, "dataset");
  }

  /**
   * Uploads images in one client stream, each file in chunks of at most 1 MiB. A file given by
   * path that cannot be read is not sent: it gets a rejected result ("cannot read the file: …")
   * at its place among the results, and the other files are stored.
   */
  async uploadImages(
    datasetId: string,
    files: Iterable<ImageFile> | AsyncIterable<ImageFile>,
    options: CallOptions = {},
  ): Promise<UploadImagesResponse> {
    const unreadable: UnreadableFile[] = [];
    const response = await this.datasets.uploadImages(
      uploadRequests(datasetId, files, (file) => unreadable.push(file)),
      { ...options, timeoutMs: options.timeoutMs ?? Math.max(this.timeoutMs, 600_000) },
    );
    return withUnreadable(response, unreadable);
  }

  /** Uploads a folder of <label>/<image> files, `batch` files per stream; one response per stream. */
  async uploadFolder(datasetId: string, folder: string, options: UploadFolderOptions = {}): Promise<UploadImagesResponse[]> {
    const { batch: batchOption, onBatch, ...callOptions } = options;
    const batch = batchOption ?? 500;
    const files = await imagesInFolder(folder);
    const responses: UploadImagesResponse[] = [];
    for (let start = 0; start < files.length; start += batch) {
      const slice = files.slice(start, start + batch);
      const response = await this.uploadImages(datasetId, slice, callOptions);
      responses.push(response);
      onBatch?.(response, start + slice.length, files.length);
    }
    return responses;
  }

  // jobs -----------------------------------------------------------------------

  /**
   * Creates a training job, queued. FAILED_PRECONDITION when S1 fails or the free
   * flavor's terms are not accepted (see `violations`); INVALID_ARGUMENT for a
   * setting out of range, the field named.
   */
  async createTrainingJob(
    datasetId: string,
    options: TrainingJobOptions = {},
    callOptions: CallOptions = {},
  ): Promise<TrainingJob> {
    const request = { ...options, datasetId, requestId: options.requestId || randomUUID() };
    // Creation publishes a dataset version first, hence the longer deadline.
    const response = await this.scheduler.createTrainingJob(request, {
      ...callOptions,
      timeoutMs: callOptions.timeoutMs ?? Math.max(this.timeoutMs, 300_000),
    });
    return present(response.trainingJob, "training_job");
  }

  /** Returns a job. NOT_FOUND if it does not exist. */
  async getTrainingJob(jobId: string, options: CallOptions = {}): Promise<TrainingJob> {
    const response = await this.scheduler.getTrainingJob({ jobId }, options);
    return present(response.trainingJob, "training_job");
  }

  /**
   * The job's events up to the final one, resumed from the last sequence seen when
   * the connection drops; see `watchTrainingJob` in watch.ts for the options.
   */
  watchTrainingJob(jobId: string, options: WatchOptions = {}): AsyncGenerator<TrainingJobEvent, void, undefined> {
    return watchTrainingJob(this.scheduler, jobId, options);
  }

  /**
   * Waits for the job to end and returns it: at once if it has ended already (the scheduler
   * prunes the events of jobs that ended long ago), else after watching its events from
   * the last one (or `options.afterSequence`) to the final one.
   */
  async waitForTrainingJob(jobId: string, options: WatchOptions = {}): Promise<TrainingJob> {
    const job = await this.getTrainingJob(jobId, { signal: options.signal });
    if (FINAL_STATES.has(job.state)) {
      return job;
    }
    const afterSequence = options.afterSequence ?? job.lastSequence;
    for await (const _ of this.watchTrainingJob(jobId, { ...options, afterSequence })) {
      // only the end matters
    }
    return this.getTrainingJob(jobId, { signal: options.signal });
  }

  // models ---------------------------------------------------------------------

  /** Returns a model version ("V001") with its evaluation. NOT_FOUND if it does not exist. */
  async getModelVersion(datasetId: string, version: string, options: CallOptions = {}): Promise<ModelVersion> {
    const response = await this.scheduler.getModelVersion({ datasetId, version }, options);
    return present(response.modelVersion, "model_version");
  }
}

/**
 * The client with, on each unary method, the deadline `timeoutMs` unless the call gives one, and
 * for idempotent reads (Get…, List…) up to `retries` retries while the connection is lost or the
 * service UNAVAILABLE, pausing 200 ms, 400 ms, … (±50 %) in between. Streams are left as they are.
 */
function withDefaults<T extends DescService>(service: T, client: Client<T>, timeoutMs: number, retries: number): Client<T> {
  const wrapped: Record<string, unknown> = { ...client };
  for (const method of service.methods) {
    if (method.methodKind !== "unary") {
      continue;
    }
    const call = (client as Record<string, unknown>)[method.localName] as (input: unknown, options?: CallOptions) => Promise<unknown>;
    const idempotent = /^(Get|List)[A-Z]/.test(method.name);
    wrapped[method.localName] = async (input: unknown, options: CallOptions = {}) => {
      const merged = { ...options, timeoutMs: options.timeoutMs ?? timeoutMs };
      for (let attempt = 0; ; attempt++) {
        try {
          return await call(input, merged);
        } catch (caught) {
          const error = ConnectError.from(caught);
          if (!idempotent || attempt >= retries || options.signal?.aborted || !isConnectionLost(error)) {
            throw caught;
          }
        }
        try {
          await sleep(RETRY_BACKOFF_MS * 2 ** attempt * (0.5 + Math.random()), undefined, { signal: options.signal });
        } catch (aborted) {
          throw new ConnectError("call aborted", Code.Canceled, undefined, undefined, aborted);
        }
      }
    };
  }
  return wrapped as Client<T>;
}

/** `compute`, called once, on the first call. */
function once<T>(compute: () => T): () => T {
  let value: { result: T } | undefined;
  return () => (value ??= { result: compute() }).result;
}

/** A response's resource, which the API always sets. */
function present<T>(value: T | undefined, field: string): T {
  if (value === undefined) {
    throw new ConnectError(`response without ${field}`, Code.Internal);
  }
  return value;
}
