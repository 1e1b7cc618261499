"""The edge agent: runs on a device, serves signed model bundles, journals every prediction.

Minimal dependencies (numpy, grpcio, protobuf, onnxruntime, cryptography): no Qt, torch, SQLModel or DVC.
Others may import only `edge_agent.proto` (its generated stubs and the bundle format)."""

__version__ = "0.1.0"
