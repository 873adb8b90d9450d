"""bev-reid: vehicle re-identification in bird's-eye-view space from surround cameras."""

__version__ = "0.1.0"
