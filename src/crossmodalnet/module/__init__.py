from ._components import BatchNorm1d, Decoder, Discriminator, Encoder
from ._module import CrossmodalModule

__all__ = ["BatchNorm1d", "CrossmodalModule", "Decoder", "Discriminator", "Encoder"]
