"""Values that the data readers, the models and the tasks must agree on, defined once.

OmniVec's modalities (in the order its masking ratios, encoders and sequential stages use) and the
ids of the word vocabulary's special tokens (:class:`jaxvision.data.text.Vocabulary` puts them
first; the summarisation head pads, starts and stops with them).
"""

from __future__ import annotations

MODALITIES = ("image", "video", "audio", "points", "text")
CLASSIFIED_MODALITIES = ("image", "video", "audio", "points")  # those with a classification head
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3  # "<pad>", "<bos>", "<eos>", "<unk>"

__all__ = ["BOS_ID", "CLASSIFIED_MODALITIES", "EOS_ID", "MODALITIES", "PAD_ID", "UNK_ID"]
