"""Placeholder tokens: adding them, initialising their embedding rows, and keeping the other rows frozen."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from break_a_scene.errors import UserInputError

log = logging.getLogger(__name__)


def token_slug(token: str) -> str:
    """A token name usable in file names and metric keys: '<asset0>' -> 'asset0'."""
    return re.sub(r"[^A-Za-z0-9_-]+", "", token) or "token"


def default_token_names(count: int, prefix: str = "asset") -> list[str]:
    return [f"<{prefix}{i}>" for i in range(count)]


def check_new_tokens(tokenizer: CLIPTokenizer, names: list[str]) -> None:
    """Refuse placeholder names that already mean something to the tokenizer, or repeat."""
    if len(set(names)) != len(names):
        raise UserInputError(f"placeholder tokens {names} repeat a name; give each concept its own (data.tokens).")
    vocab = tokenizer.get_vocab()
    for name in names:
        if name in vocab or name.lower() in vocab or f"{name.lower()}</w>" in vocab:
            raise UserInputError(
                f"placeholder token '{name}' already exists in the tokenizer's vocabulary, so it would not be a "
                f"new concept. Choose an unused name such as '<{name.strip('<>')}_new>' (data.tokens)."
            )


@dataclass
class PlaceholderTokens:
    names: list[str]
    ids: list[int]
    initializer_words: list[str] | None


def add_placeholder_tokens(
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    names: list[str],
    initializer_words: list[str] | None = None,
) -> PlaceholderTokens:
    """Add `names` to the tokenizer, grow the embedding matrix and initialise the new rows.

    With initializer words, row(v_i) = the embedding of the first BPE piece of word i (a warning is logged
    when a word has several pieces). Without, the released code's choice: rows of rare tokens, ids
    V-2N .. V-N-1 of the original vocabulary of size V.
    """
    check_new_tokens(tokenizer, names)
    original_size = len(tokenizer)
    tokenizer.add_tokens(names)
    ids = tokenizer.convert_tokens_to_ids(names)
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    weight = text_encoder.get_input_embeddings().weight
    count = len(names)
    with torch.no_grad():
        if initializer_words:
            for token_id, name, word in zip(ids, names, initializer_words):
                pieces = tokenizer.encode(word, add_special_tokens=False)
                if not pieces:
                    raise UserInputError(f"initializer word {word!r} for {name} has no tokens; give a real word.")
                if len(pieces) > 1:
                    log.warning(
                        "initializer word %r for %s is %d BPE pieces %s; using the first, %r",
                        word, name, len(pieces), tokenizer.convert_ids_to_tokens(pieces),
                        tokenizer.convert_ids_to_tokens(pieces[0]),
                    )
                weight[token_id] = weight[pieces[0]]
        else:
            weight[ids] = weight[original_size - 2 * count : original_size - count].clone()
    return PlaceholderTokens(list(names), list(ids), list(initializer_words) if initializer_words else None)


class FrozenRows:
    """Keeps every embedding row except the trainable ones bit-identical (phase 1).

    AdamW's weight decay and the gradients of ordinary prompt words ("a", "photo", "of") would otherwise
    move those rows; `restore` writes the saved rows back after each optimizer step, as the released code does.
    """

    def __init__(self, embedding: torch.nn.Embedding, trainable_ids: list[int]):
        self.embedding = embedding
        self.frozen = torch.ones(embedding.num_embeddings, dtype=torch.bool)
        self.frozen[trainable_ids] = False
        self.saved = embedding.weight.detach()[self.frozen].clone()

    @torch.no_grad()
    def restore(self) -> None:
        weight = self.embedding.weight
        if self.saved.device != weight.device:  # the module moved to its accelerator after we were made
            self.frozen, self.saved = self.frozen.to(weight.device), self.saved.to(weight.device)
        weight[self.frozen] = self.saved.to(weight.dtype)
