"""loadgen: synthetic traffic and trace generator for service meshes."""

__version__ = "0.1.0"
