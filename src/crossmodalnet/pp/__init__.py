from ._normalize import clr, log_normalize

__all__ = ["clr", "log_normalize"]
