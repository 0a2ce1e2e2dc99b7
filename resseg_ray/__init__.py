"""resseg-ray: building segmentation of satellite scenes with residual encoder-decoders on Ray."""

__version__ = "0.1.0"
