"""Virtual webcam: camera (or a video file) -> flash matting -> pyvirtualcam (or a video file).

``sources`` reads frames on a thread into a :class:`~cuematte.clients.virtualcam.latest.LatestFrame` slot,
``pipeline`` mattes the newest frame against the cached flash features, ``sinks`` write the result, and
``preview`` is the optional Tk window with the screen flash. ``cuematte virtualcam`` wires them together.
"""
