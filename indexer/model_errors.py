"""The error of an embedding model that cannot be loaded, shared by every backend
(indexer/embeddings.py, indexer/onnx.py) so neither imports the other for it."""


class EmbeddingError(Exception):
    """The configured model cannot be loaded."""
