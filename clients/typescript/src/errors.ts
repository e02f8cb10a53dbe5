/**
 * Errors: calls fail with Connect's `ConnectError` (its `code` is the gRPC status
 * code). Trainyard servers attach google.rpc details to refusals; `violations`
 * reads them.
 */
import { Code, ConnectError } from "@connectrpc/connect";

import { BadRequestSchema, PreconditionFailureSchema } from "./gen/google/rpc/error_details_pb.js";

/** One reason a call was refused. */
export interface Violation {
  /** The request field at fault (INVALID_ARGUMENT), or the rule id such as "S1" (FAILED_PRECONDITION). */
  readonly subject: string;
  /** What is wrong, for people. */
  readonly description: string;
}

/**
 * Every reason the server gave for refusing a call: the fields of an INVALID_ARGUMENT
 * (google.rpc.BadRequest) and the failing rules of a FAILED_PRECONDITION, for example
 * every failing S1 rule (google.rpc.PreconditionFailure). Empty for other errors.
 */
export function violations(error: unknown): Violation[] {
  if (!(error instanceof ConnectError)) {
    return [];
  }
  const fields = error
    .findDetails(BadRequestSchema)
    .flatMap((detail) => detail.fieldViolations)
    .map((v) => ({ subject: v.field, description: v.description }));
  const rules = error
    .findDetails(PreconditionFailureSchema)
    .flatMap((detail) => detail.violations)
    .map((v) => ({ subject: v.type, description: v.description }));
  return [...fields, ...rules];
}

/** Codes under which Connect reports a connection that failed under a call. */
const LOCAL_FAILURE_CODES: ReadonlySet<Code> = new Set([Code.Canceled, Code.Aborted, Code.Internal, Code.Unknown]);

/**
 * Whether an error means the connection to the server was lost (or could not be
 * made) rather than the server refusing the call, so the call may be made again:
 *
 * - UNAVAILABLE, whoever reported it;
 * - CANCELED, ABORTED, INTERNAL or UNKNOWN that the server did not send. A status
 *   the server sends always arrives with a `grpc-status` header or trailer; without
 *   one, the error came from this side's HTTP/2 stack. gRPC's own libraries call a
 *   dropped connection UNAVAILABLE, Connect for Node.js reports how the stream
 *   ended instead: a server killed mid-stream gives "http/2 stream closed with
 *   error code CANCEL" (CANCELED), a reset socket ABORTED.
 *
 * A call the caller cancelled also ends CANCELED without a `grpc-status`: check the
 * caller's AbortSignal first (watchTrainingJob does).
 */
export function isConnectionLost(error: ConnectError): boolean {
  if (error.code === Code.Unavailable) {
    return true;
  }
  return LOCAL_FAILURE_CODES.has(error.code) && !error.metadata.has("grpc-status");
}
