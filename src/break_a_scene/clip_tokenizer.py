"""The real 49,408-token CLIP tokenizer, built offline from the BPE file bundled in open-clip-torch.

Tiny models use it so that token ids, BPE splits and prompt lengths in tests are those of Stable Diffusion.
"""

from __future__ import annotations

import copy
import functools
import gzip
import os

from transformers import CLIPTokenizer

MAX_LENGTH = 77
_NUM_MERGES = 49152 - 256 - 2  # the count the CLIP authors kept from the BPE file


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins for raw bytes, in the order CLIP's vocabulary lists them."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\N{INVERTED EXCLAMATION MARK}"), ord("\N{NOT SIGN}") + 1),
        *range(ord("\N{REGISTERED SIGN}"), ord("\N{LATIN SMALL LETTER Y WITH DIAERESIS}") + 1),
    ]
    shifted = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n, _ in enumerate(shifted)]


def bundled_bpe_path() -> str:
    import open_clip

    return os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")


def clip_merges() -> list[tuple[str, str]]:
    """CLIP's BPE merges, in rank order."""
    with gzip.open(bundled_bpe_path(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    return [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]


def base_pieces() -> list[str]:
    """The 512 single-character pieces every CLIP vocabulary starts with."""
    alphabet = _byte_alphabet()
    return alphabet + [c + "</w>" for c in alphabet]


def tokenizer_from_merges(merges: list[tuple[str, str]], pad_token: str = "!",
                          max_length: int = MAX_LENGTH) -> CLIPTokenizer:
    """A CLIP-style tokenizer whose vocabulary is the base pieces, the merges' results and the specials."""
    pieces = base_pieces() + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length, pad_token=pad_token)


def build_clip_tokenizer(pad_token: str = "!") -> CLIPTokenizer:
    """CLIP's tokenizer with SD 2.x's padding ('!', id 0); pass '<|endoftext|>' for SD 1.x's. A fresh copy
    each time (callers add tokens to theirs); the first build is cached, as it takes seconds."""
    return copy.deepcopy(_cached_clip_tokenizer(pad_token))


@functools.lru_cache(maxsize=None)
def _cached_clip_tokenizer(pad_token: str) -> CLIPTokenizer:
    return tokenizer_from_merges(clip_merges(), pad_token)
