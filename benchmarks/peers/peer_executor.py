"""clip-server's torch CLIPEncoder on a local file (loaded by jina from the peer venv).

clip-server 0.8.3 has no option for a local weights file: `OpenCLIPModel` always asks
`download_model` for the hub URL of the model name and checks the file's md5. This module
points that lookup at $CONCORD_PEER_MODEL (an OpenAI-layout state dict, see model.py) and
changes nothing else: preprocessing, tokenizer, model code and serving are clip-server's own.
"""

import os

from clip_server.executors.clip_torch import CLIPEncoder  # type: ignore[import-not-found]
from clip_server.model import openclip_model  # type: ignore[import-not-found]


def _local_model(url: str, md5sum: str | None = None, **_: object) -> str:
    return os.environ["CONCORD_PEER_MODEL"]


openclip_model.download_model = _local_model


class LocalCLIPEncoder(CLIPEncoder):  # type: ignore[misc]
    """CLIPEncoder whose weights come from $CONCORD_PEER_MODEL."""
