"""CLIP's BPE tokenizer on a small vocabulary: the world's text tower embeds ~150 tokens, not 49,408.

Text is split by open_clip's own BPE; each BPE token the world knows gets a small id, any other one
the UNK id (never an error). Ids: 0 padding, 1 start-of-text, 2 UNK, then the known tokens in BPE
order, and end-of-text LAST, so that it is the largest id and CLIP's argmax pooling finds it.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable

import torch
from open_clip.tokenizer import SimpleTokenizer

PAD_ID, SOT_ID, UNK_ID = 0, 1, 2
SOT_TOKEN, EOT_TOKEN = "<start_of_text>", "<end_of_text>"
DEFAULT_CONTEXT_LENGTH = 24
# Texts every tokenizer of the world must cover: the prompt placeholder, punctuation and the
# hand-crafted templates of zero-shot CLIP and MetaPrompt.
REQUIRED_TEXTS = ("X X X X.", "a photo of a {}.", "a photo of a {}", ",")


@lru_cache(maxsize=1)
def _bpe() -> SimpleTokenizer:
    return SimpleTokenizer()


def bpe_tokens(text: str) -> list[str]:
    """The BPE tokens of ``text`` (lower-cased, cleaned as CLIP does), e.g. ``['red</w>', 'star</w>']``."""
    bpe = _bpe()
    return [bpe.decoder[i] for i in bpe.encode(text)]


class WorldTokenizer:
    """Callable ``texts -> LongTensor [N, context_length]``, zero-padded, like open_clip's tokenizers."""

    def __init__(self, vocab: list[str], context_length: int = DEFAULT_CONTEXT_LENGTH) -> None:
        """``vocab``: the known BPE tokens (strings such as ``'red</w>'``), in id order from 3 on."""
        self.vocab = list(vocab)
        self.context_length = context_length
        bpe_ids = _bpe().encoder
        unknown = [t for t in self.vocab if t not in bpe_ids]
        if unknown:
            raise ValueError(f"vocabulary tokens not in CLIP's BPE: {unknown[:5]}")
        self._id_of = {bpe_ids[t]: UNK_ID + 1 + i for i, t in enumerate(self.vocab)}
        self.eot_id = UNK_ID + 1 + len(self.vocab)

    @classmethod
    def from_texts(cls, texts: Iterable[str], context_length: int = DEFAULT_CONTEXT_LENGTH) -> "WorldTokenizer":
        """The tokenizer whose vocabulary is every BPE token of ``texts`` plus ``REQUIRED_TEXTS``."""
        tokens = {t for text in (*texts, *REQUIRED_TEXTS) for t in bpe_tokens(text.replace("{}", ""))}
        encoder = _bpe().encoder
        return cls(sorted(tokens, key=encoder.__getitem__), context_length)

    @property
    def vocab_size(self) -> int:
        return self.eot_id + 1

    @property
    def decoder(self) -> dict[int, str]:
        """Token id -> its text (open_clip's tokenizers have the same attribute)."""
        names = {PAD_ID: "<pad>", SOT_ID: "<start_of_text>", UNK_ID: "<unk>", self.eot_id: "<end_of_text>"}
        return {**names, **{UNK_ID + 1 + i: token for i, token in enumerate(self.vocab)}}

    def encode(self, text: str) -> list[int]:
        """Small ids of ``text`` without start / end tokens; unknown BPE tokens become ``UNK_ID``."""
        return [self._id_of.get(i, UNK_ID) for i in _bpe().encode(text)]

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.LongTensor:
        texts = [texts] if isinstance(texts, str) else texts
        length = context_length or self.context_length
        out = torch.zeros(len(texts), length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [SOT_ID, *self.encode(text)][: length - 1] + [self.eot_id]
            out[row, : len(ids)] = torch.tensor(ids)
        return out
