from ._crossmodalnet import CrossmodalNet
from ._tune import table_s1_search_space, tune_hyperparameters
from ._uncertainty import ProteinUncertainty

__all__ = ["CrossmodalNet", "ProteinUncertainty", "table_s1_search_space", "tune_hyperparameters"]
