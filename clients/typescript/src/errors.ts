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
 * caller's AbortSignal first (watchTrainingJob does). A server certificate this
 * client does not trust is not a lost connection (see certificateRejected), and nor
 * is any error whose cause (Node.js's error, which Connect keeps as `cause`) is a
 * TLS setup error (`ERR_SSL_*`, `ERR_TLS_*`) or a file-system one (ENOENT, a failed
 * `open` or `stat`, …); a network error there (ECONNRESET, ECONNREFUSED, EPIPE,
 * ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, EAI_AGAIN, `ERR_HTTP2_*`, …) always is one.
 */
export function isConnectionLost(error: ConnectError): boolean {
  if (certificateRejected(error)) {
    return false;
  }
  const cause = localCause(error);
  if (cause !== undefined) {
    // This side failed before or under the call: the cause's code tells a network failure
    // from a configuration error (TLS setup, a file that cannot be read) that a retry won't cure.
    if (NETWORK_ERRORS.has(cause.code) || cause.code.startsWith("ERR_HTTP2_")) {
      return true;
    }
    if (cause.code.startsWith("ERR_SSL_") || cause.code.startsWith("ERR_TLS_") || cause.fileSystem) {
      return false;
    }
  }
  if (error.code === Code.Unavailable) {
    return true;
  }
  return LOCAL_FAILURE_CODES.has(error.code) && !error.metadata.has("grpc-status");
}

/** Node.js's codes (errno names) of a network connection that failed or could not be made. */
const NETWORK_ERRORS: ReadonlySet<string> = new Set([
  "ECONNRESET", "ECONNREFUSED", "ECONNABORTED", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "EHOSTDOWN", "ENETUNREACH",
  "ENETDOWN", "ENETRESET", "EAI_AGAIN", "ENOTCONN", "ESOCKETTIMEDOUT", "UND_ERR_SOCKET",
]);

/** System calls on local files: an error from one of them is no network failure. */
const FILE_SYSCALLS: ReadonlySet<string> = new Set([
  "open", "stat", "lstat", "fstat", "read", "access", "scandir", "readlink", "realpath", "mkdir", "close",
]);

/** Errno codes that only file-system calls give. */
const FILE_ERRORS: ReadonlySet<string> = new Set(["ENOENT", "EACCES", "EISDIR", "ENOTDIR", "EMFILE", "ENFILE", "ELOOP", "EPERM"]);

/**
 * The first error with a `code` along the error's chain of causes (Connect wraps Node.js's
 * error as the cause), and whether it came from the file system; undefined when there is none.
 */
function localCause(error: ConnectError): { code: string; fileSystem: boolean } | undefined {
  let cause: unknown = error.cause;
  for (let depth = 0; depth < 8 && cause instanceof Error; depth++, cause = cause.cause) {
    const { code, syscall } = cause as NodeJS.ErrnoException;
    if (typeof code === "string") {
      const fileSystem = (syscall !== undefined && FILE_SYSCALLS.has(syscall)) || (syscall === undefined && FILE_ERRORS.has(code));
      return { code, fileSystem };
    }
  }
  return undefined;
}

/**
 * Node.js's codes for a server certificate that fails verification (OpenSSL's X509
 * errors, see https://nodejs.org/api/tls.html, and a name that does not match).
 */
const CERTIFICATE_ERRORS: ReadonlySet<string> = new Set([
  "UNABLE_TO_GET_ISSUER_CERT", "UNABLE_TO_GET_CRL", "UNABLE_TO_DECRYPT_CERT_SIGNATURE",
  "UNABLE_TO_DECRYPT_CRL_SIGNATURE", "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY", "CERT_SIGNATURE_FAILURE",
  "CRL_SIGNATURE_FAILURE", "CERT_NOT_YET_VALID", "CERT_HAS_EXPIRED", "CRL_NOT_YET_VALID", "CRL_HAS_EXPIRED",
  "ERROR_IN_CERT_NOT_BEFORE_FIELD", "ERROR_IN_CERT_NOT_AFTER_FIELD", "ERROR_IN_CRL_LAST_UPDATE_FIELD",
  "ERROR_IN_CRL_NEXT_UPDATE_FIELD", "DEPTH_ZERO_SELF_SIGNED_CERT", "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "UNABLE_TO_VERIFY_LEAF_SIGNATURE", "CERT_CHAIN_TOO_LONG", "CERT_REVOKED",
  "INVALID_CA", "PATH_LENGTH_EXCEEDED", "INVALID_PURPOSE", "CERT_UNTRUSTED", "CERT_REJECTED", "HOSTNAME_MISMATCH",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/**
 * Whether the call failed because this client did not trust the server's certificate
 * (Connect reports it as INTERNAL, "unable to verify the first certificate"): a
 * configuration error (the wrong `tls.ca`) that trying again will not cure.
 */
export function certificateRejected(error: ConnectError): boolean {
  const cause: unknown = error.cause;
  const code = cause instanceof Error ? (cause as NodeJS.ErrnoException).code : undefined;
  return code !== undefined && CERTIFICATE_ERRORS.has(code);
}
