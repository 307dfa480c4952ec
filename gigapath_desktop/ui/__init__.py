"""The Qt desktop application: a thin layer over the core that turns engine events into signals."""
