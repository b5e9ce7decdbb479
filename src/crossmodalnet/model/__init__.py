from ._crossmodalnet import CrossmodalNet
from ._split import holdout_split, stratified_split
from ._tune import table_s1_search_space, tune_hyperparameters
from ._uncertainty import ProteinUncertainty

__all__ = [
    "CrossmodalNet",
    "ProteinUncertainty",
    "holdout_split",
    "stratified_split",
    "table_s1_search_space",
    "tune_hyperparameters",
]
