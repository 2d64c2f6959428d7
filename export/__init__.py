"""Export: the fused uint8-in graph, ONNX, its checks, the deployment bundle; engines via destseg.tensorrt or torch-tensorrt."""
