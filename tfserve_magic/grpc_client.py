"""Old import path of the gRPC client: ``tfserve_magic.client.grpc`` holds it now."""

from tfserve_magic.client.grpc import GrpcClient

__all__ = ["GrpcClient"]
