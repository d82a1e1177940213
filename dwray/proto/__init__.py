"""dwray's gRPC API: the ``dwray.v1`` protocol definitions and the signature of a call.

- ``dwray.proto`` (this folder): the service ``dwray.v1.Warehouse`` (Put, Get,
  Head, List, Delete), its messages, and in its comments the authentication
  scheme, deadlines and status codes.
- ``dwray_pb2`` and ``dwray_pb2_grpc``: generated from it by grpcio-tools when
  the package is built (:mod:`dwray.proto.build`), never committed.
- :mod:`dwray.proto.signing`: the metadata that signs a call (clients) and the
  string to sign (the gateway's check, ``serve_apps.grpc_auth``).

The bottom layer of the package: it imports only the standard library, protobuf and grpc.
"""
