"""buildbox: immutable, pinned, verified buildbox images with CycloneDX SBOMs."""

__version__ = "0.1.0"
