from ._crossmodalnet import CrossmodalNet
from ._tune import table_s1_search_space, tune_hyperparameters

__all__ = ["CrossmodalNet", "table_s1_search_space", "tune_hyperparameters"]
