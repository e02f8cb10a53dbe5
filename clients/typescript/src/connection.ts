/**
 * How a client reaches the services: addresses, the API key sent with every call,
 * and TLS (the CA to trust and, for mTLS, the certificate to present). The
 * defaults follow the Python SDK's `Connection.from_env`: environment variables
 * first, then the `stack.json` of a local stack, then plain text on loopback.
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";

import type { Interceptor, Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

/** TLS settings: the CA that signed the servers' certificates and, for mTLS, this client's certificate. */
export interface TlsOptions {
  /** PEM of the CA certificate(s) to trust; Node.js's built-in list of public CAs when left out. */
  readonly ca?: string | Buffer;
  /** PEM certificate (chain) to present to servers that require one (mTLS); needs `key`. */
  readonly cert?: string | Buffer;
  /** PEM private key of `cert`. */
  readonly key?: string | Buffer;
}

/** What a transport to one service needs besides its address. */
export interface TransportOptions {
  /** Sent as `authorization: Bearer <apiKey>` with every call, streams and their resumptions included. */
  readonly apiKey?: string;
  /**
   * TLS: settings, `true` for TLS with Node.js's public CAs, `false` for plain text.
   * Left out: TLS for an https:// address, plain text otherwise.
   */
  readonly tls?: TlsOptions | boolean;
  /** Connect interceptors for every call (logging, extra headers); they run inside the API-key one. */
  readonly interceptors?: Interceptor[];
  /**
   * Interval of HTTP/2 PING frames on a connection with open streams, in ms (default 30 000):
   * a connection that stops answering (a proxy that stops forwarding) closes, with its streams,
   * instead of hanging a watch forever. `Infinity` turns PINGs off.
   */
  readonly pingIntervalMs?: number;
  /** How long a PING may go unanswered before the connection closes, in ms (default 15 000). */
  readonly pingTimeoutMs?: number;
  /** Also PING connections without open streams (default true), so a dead one is not reused. */
  readonly pingIdleConnection?: boolean;
}

/** Default HTTP/2 keepalive: a PING every 30 s, answered within 15 s. */
export const DEFAULT_PING_INTERVAL_MS = 30_000;
export const DEFAULT_PING_TIMEOUT_MS = 15_000;

/** The stack.json a local stack writes (`trainyard dev up`): addresses, and the files that hold credentials. */
interface StackFile {
  dataset?: string;
  scheduler?: string;
  api_key_file?: string;
  tls_ca?: string;
  tls_client_cert?: string;
  tls_client_key?: string;
}

/**
 * The local stack's stack.json in TRAINYARD_DATA_DIR (default .trainyard), or {} when there is none.
 * Throws, naming the file, when it cannot be read or is not a JSON object.
 */
function stackFile(env: NodeJS.ProcessEnv): StackFile {
  const file = path.join(env.TRAINYARD_DATA_DIR || ".trainyard", "stack.json");
  if (!existsSync(file)) {
    return {};
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, "utf8"));
  } catch (error) {
    throw new Error(`${file}: not a valid stack.json: ${(error as Error).message}`, { cause: error });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new Error(`${file}: not a valid stack.json: expected a JSON object`);
  }
  return parsed as StackFile;
}

function readNamed(file: string, source: string): Buffer {
  try {
    return readFileSync(file);
  } catch (error) {
    throw new Error(`${source}=${file}: ${(error as Error).message}`, { cause: error });
  }
}

/**
 * (dataset, scheduler) addresses: TRAINYARD_DATASET_ADDRESS and TRAINYARD_SCHEDULER_ADDRESS,
 * else those of a local stack started in TRAINYARD_DATA_DIR (default .trainyard, its
 * stack.json), else 127.0.0.1:50051 and :50052.
 */
export function defaultAddresses(env: NodeJS.ProcessEnv = process.env): { dataset: string; scheduler: string } {
  let dataset = env.TRAINYARD_DATASET_ADDRESS;
  let scheduler = env.TRAINYARD_SCHEDULER_ADDRESS;
  if (!dataset || !scheduler) {
    const stack = stackFile(env);
    dataset ||= stack.dataset;
    scheduler ||= stack.scheduler;
  }
  return { dataset: dataset || "127.0.0.1:50051", scheduler: scheduler || "127.0.0.1:50052" };
}

/** The API key: TRAINYARD_API_KEY, else the contents of the local stack's key file, else none. */
export function defaultApiKey(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.TRAINYARD_API_KEY) {
    return env.TRAINYARD_API_KEY.trim();
  }
  const keyFile = stackFile(env).api_key_file;
  return keyFile && existsSync(keyFile) ? readFileSync(keyFile, "utf8").trim() : undefined;
}

/**
 * TLS settings from files: TRAINYARD_TLS_CA and, for mTLS, both TRAINYARD_TLS_CLIENT_CERT
 * and TRAINYARD_TLS_CLIENT_KEY (any of them set turns TLS on; without TRAINYARD_TLS_CA the
 * server is checked against Node.js's public CAs); else the local stack's (`tls_ca`,
 * `tls_client_cert`, `tls_client_key` in stack.json); else none (plain text).
 * Throws when a named file cannot be read, or only one of certificate and key is named.
 */
export function defaultTls(env: NodeJS.ProcessEnv = process.env): TlsOptions | undefined {
  const cert = env.TRAINYARD_TLS_CLIENT_CERT;
  const key = env.TRAINYARD_TLS_CLIENT_KEY;
  if (env.TRAINYARD_TLS_CA || cert || key) {
    if (!cert !== !key) {
      throw new Error(
        `a client certificate needs both TRAINYARD_TLS_CLIENT_CERT and TRAINYARD_TLS_CLIENT_KEY; ` +
          `${cert ? "TRAINYARD_TLS_CLIENT_KEY" : "TRAINYARD_TLS_CLIENT_CERT"} is not set`,
      );
    }
    return {
      ...(env.TRAINYARD_TLS_CA ? { ca: readNamed(env.TRAINYARD_TLS_CA, "TRAINYARD_TLS_CA") } : {}),
      ...(cert && key
        ? { cert: readNamed(cert, "TRAINYARD_TLS_CLIENT_CERT"), key: readNamed(key, "TRAINYARD_TLS_CLIENT_KEY") }
        : {}),
    };
  }
  const stack = stackFile(env);
  if (!stack.tls_client_cert !== !stack.tls_client_key) {
    throw new Error(
      `stack.json names ${stack.tls_client_cert ? "tls_client_cert but no tls_client_key" : "tls_client_key but no tls_client_cert"}: ` +
        "a client certificate needs both",
    );
  }
  if (!stack.tls_ca && !stack.tls_client_cert) {
    return undefined;
  }
  return {
    ...(stack.tls_ca ? { ca: readNamed(stack.tls_ca, "stack.json tls_ca") } : {}),
    ...(stack.tls_client_cert && stack.tls_client_key
      ? {
          cert: readNamed(stack.tls_client_cert, "stack.json tls_client_cert"),
          key: readNamed(stack.tls_client_key, "stack.json tls_client_key"),
        }
      : {}),
  };
}

/** An interceptor that sends `authorization: Bearer <apiKey>` unless the call sets its own. */
export function apiKeyInterceptor(apiKey: string): Interceptor {
  const value = `Bearer ${apiKey}`;
  return (next) => async (request) => {
    if (!request.header.has("authorization")) {
      request.header.set("authorization", value);
    }
    return next(request);
  };
}

/**
 * A gRPC (HTTP/2) transport to one service. `address` is host:port, or a URL used as
 * it is (https:// means TLS). With `tls`, host:port is reached over TLS, trusting
 * `tls.ca` and presenting `tls.cert`/`tls.key` when given; with `apiKey`, every call
 * carries it. Throws when the options contradict each other.
 */
export function grpcTransport(address: string, options: TransportOptions = {}): Transport {
  const { tls, apiKey } = options;
  const scheme = /^(https?):\/\//i.exec(address)?.[1]?.toLowerCase();
  if (scheme === "http" && tls) {
    throw new Error(`${address} is a plain-text (http://) address, but TLS options were given`);
  }
  if (scheme === "https" && tls === false) {
    throw new Error(`${address} is a TLS (https://) address, but TLS was turned off`);
  }
  if (typeof tls === "object" && !tls.cert !== !tls.key) {
    throw new Error("a client certificate (tls.cert) needs its private key (tls.key), and the other way round");
  }
  const secure = scheme === "https" || (scheme === undefined && Boolean(tls));
  const baseUrl = scheme ? address : `${secure ? "https" : "http"}://${address}`;
  const interceptors = [...(apiKey ? [apiKeyInterceptor(apiKey)] : []), ...(options.interceptors ?? [])];
  const keepalive = {
    pingIntervalMs: options.pingIntervalMs ?? DEFAULT_PING_INTERVAL_MS,
    pingTimeoutMs: options.pingTimeoutMs ?? DEFAULT_PING_TIMEOUT_MS,
    pingIdleConnection: options.pingIdleConnection ?? true,
  };
  if (!secure) {
    return createGrpcTransport({ baseUrl, interceptors, ...keepalive });
  }
  const settings = typeof tls === "object" ? tls : {};
  const nodeOptions = {
    ...(settings.ca !== undefined ? { ca: settings.ca } : {}),
    ...(settings.cert !== undefined ? { cert: settings.cert } : {}),
    ...(settings.key !== undefined ? { key: settings.key } : {}),
  };
  return createGrpcTransport({ baseUrl, interceptors, nodeOptions, ...keepalive });
}
