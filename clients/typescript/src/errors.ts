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

/**
 * Whether an error means the connection to the server was lost (or never made)
 * rather than an answer from the server: UNAVAILABLE, or a failure of the
 * connection itself, which Connect reports with the Node.js error as its cause
 * (a reset socket surfaces as ABORTED or INTERNAL, not UNAVAILABLE as in gRPC's
 * own libraries). A call that failed this way can be made again.
 */
export function isConnectionLost(error: ConnectError): boolean {
  if (error.code === Code.Unavailable) {
    return true;
  }
  if (error.code !== Code.Aborted && error.code !== Code.Internal && error.code !== Code.Unknown) {
    return false;
  }
  for (let cause: unknown = error.cause; cause instanceof Error; cause = cause.cause) {
    const nodeCode = (cause as NodeJS.ErrnoException).code;
    if (typeof nodeCode === "string" && (nodeCode.startsWith("ERR_HTTP2_") || nodeCode.startsWith("E"))) {
      return true;
    }
  }
  return false;
}
