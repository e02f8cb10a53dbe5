/**
 * Fakes of the Trainyard services for the unit tests: in-memory ones (Connect's
 * router transport) and a real HTTP/2 gRPC server on a loopback port, whose
 * connections a test can cut as a killed process would.
 */
import http2 from "node:http2";
import type { AddressInfo } from "node:net";

import type { DescService } from "@bufbuild/protobuf";
import { type Client, createClient, createRouterTransport, type ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";

import { grpcTransport, type TransportOptions } from "../src/index.js";

/** A client of an in-memory implementation of (part of) a service. */
export function inMemoryClient<T extends DescService>(service: T, implementation: Partial<ServiceImpl<T>>): Client<T> {
  return createClient(service, createRouterTransport(({ service: route }) => route(service, implementation)));
}

/** A gRPC server on 127.0.0.1 serving (part of) a service, called through the SDK's own transport. */
export class FakeGrpcServer<T extends DescService> {
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  /** host:port it listens on. */
  address = "";

  private constructor(
    readonly service: T,
    private readonly server: http2.Http2Server,
  ) {
    server.on("session", (session) => {
      this.sessions.add(session);
      session.on("close", () => this.sessions.delete(session));
    });
  }

  static async start<T extends DescService>(service: T, implementation: Partial<ServiceImpl<T>>): Promise<FakeGrpcServer<T>> {
    const routes = connectNodeAdapter({ routes: (router) => router.service(service, implementation) });
    const fake = new FakeGrpcServer(service, http2.createServer(routes));
    await new Promise<void>((resolve) => fake.server.listen(0, "127.0.0.1", resolve));
    fake.address = `127.0.0.1:${(fake.server.address() as AddressInfo).port}`;
    return fake;
  }

  /** A client over plain-text gRPC, the transport TrainyardClient.connect uses. */
  client(options: TransportOptions = {}): Client<T> {
    return createClient(this.service, grpcTransport(this.address, options));
  }

  /** Closes every connection at once, without a word to the client, as a killed process would. */
  dropConnections(): void {
    for (const session of this.sessions) {
      session.destroy();
    }
  }

  async close(): Promise<void> {
    this.dropConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
