"""Export: the fused uint8-in graph, ONNX, the deployment bundle and TensorRT engines."""
