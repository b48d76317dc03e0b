"""imgsearch: search by image with VGG19 features.

The core library: decoding, embedding, storage, index backends and the pipeline that joins them.
Adapters (the Lambda handlers, the Chalice app, the CLI) only translate their input into calls of it.
"""

__version__ = "0.1.0"
