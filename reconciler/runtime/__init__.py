"""The site's inference runtime: onnxruntime sessions behind Open Inference Protocol v2 REST."""
