"""cuematte: real-time portrait matting for video calls from physical cues (flash/no-flash, parallax).

Subpackages: ``engine`` (inference without torch), ``live`` (the capture-matte-composite loop shared by the
service and the virtual webcam), ``server`` (WebRTC service), ``clients`` (CLI, virtual webcam, benchmarks),
``export`` (ONNX and TensorRT) and ``training``.
"""
