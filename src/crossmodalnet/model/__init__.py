from ._crossmodalnet import CrossmodalNet

__all__ = ["CrossmodalNet"]
