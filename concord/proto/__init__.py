"""Generated protobuf / gRPC stubs (concord.proto.v1); regenerate with `make protos`."""
