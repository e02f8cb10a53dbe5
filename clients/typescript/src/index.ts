/**
 * Trainyard TypeScript SDK.
 *
 * - `TrainyardClient`: create a dataset, upload images, create and watch a
 *   training job (resumed after a dropped connection), get a model version.
 *   `TrainyardClient.connect` takes the API key and TLS settings (or finds them
 *   in the environment); `grpcTransport` builds one transport the same way.
 * - The typed messages, enums and service descriptors generated from
 *   protos/trainyard/ by protoc-gen-es (create them with `create(XSchema, {...})`
 *   from @bufbuild/protobuf).
 */
export { type ConnectOptions, type TrainingJobOptions, TrainyardClient, type UploadFolderOptions } from "./client.js";
export {
  apiKeyInterceptor,
  DEFAULT_PING_INTERVAL_MS,
  DEFAULT_PING_TIMEOUT_MS,
  defaultAddresses,
  defaultApiKey,
  defaultTls,
  grpcTransport,
  type TlsOptions,
  type TransportOptions,
} from "./connection.js";
export { certificateRejected, isConnectionLost, type Violation, violations } from "./errors.js";
export {
  CHUNK_BYTES,
  IMAGE_SUFFIXES,
  type ImageFile,
  imagesInFolder,
  type UnreadableFile,
  uploadRequests,
  withUnreadable,
} from "./upload.js";
export { type WatchOptions, watchTrainingJob } from "./watch.js";

export * from "./gen/trainyard/common/v1/training_pb.js";
export * from "./gen/trainyard/dataset/v1/dataset_pb.js";
export * from "./gen/trainyard/dataset/v1/dataset_service_pb.js";
export * from "./gen/trainyard/scheduler/v1/scheduler_pb.js";
export * from "./gen/trainyard/scheduler/v1/scheduler_service_pb.js";
export * from "./gen/trainyard/trainer/v1/trainer_pb.js";
