"""Pure-torch model code shared by services (image/text towers, dual encoder, losses); no I/O."""

from concord.models.clip import ClipAdapter
from concord.models.config import EncoderConfig, ImageTowerConfig, TextTowerConfig, load_config
from concord.models.dual_encoder import DualEncoder, Encoded
from concord.models.losses import FilipSimilarity, contrastive_loss, filip_loss, filip_similarity
from concord.models.preprocess import TextTokenizer, TokenBatch, images_to_tensor
from concord.models.xbt import CompatibleProjection

__all__ = [
    "ClipAdapter",
    "CompatibleProjection",
    "DualEncoder",
    "Encoded",
    "EncoderConfig",
    "FilipSimilarity",
    "ImageTowerConfig",
    "TextTokenizer",
    "TextTowerConfig",
    "TokenBatch",
    "contrastive_loss",
    "filip_loss",
    "filip_similarity",
    "images_to_tensor",
    "load_config",
]
