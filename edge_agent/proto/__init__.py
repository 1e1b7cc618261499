"""The published protocol of the edge agent: generated gRPC stubs and the bundle format."""
