"""Prompts as token ids, and placeholder tokens: adding them, initialising their embedding rows, and keeping
the other rows frozen."""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from dataclasses import dataclass, field

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from break_a_scene.errors import UserInputError

log = logging.getLogger(__name__)


def tokenize(tokenizer: CLIPTokenizer, prompts: list[str], length: int | None = None) -> torch.Tensor:
    """(len(prompts), length) ids, padded and truncated as the pipelines do (CLIP: its 77 positions)."""
    return tokenizer(
        prompts, padding="max_length", max_length=length or tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    ).input_ids


def tokenize_all(tokenizers: list, prompts: list[str], lengths: list[int] | None = None) -> torch.Tensor:
    """(len(prompts), E, T): the prompts' ids in each of a family's E tokenizers, each at its own length
    (`lengths`, default their model_max_length), right-padded with its pad id to the longest, T, so they
    stack; a family's `encode_prompt` reads each encoder's own length back."""
    lengths = lengths or [tokenizer.model_max_length for tokenizer in tokenizers]
    longest = max(lengths)
    return torch.stack([
        torch.nn.functional.pad(tokenize(tokenizer, prompts, length), (0, longest - length),
                                value=tokenizer.pad_token_id)
        for tokenizer, length in zip(tokenizers, lengths)
    ], dim=1)


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
    ids: list[int]  # in the first tokenizer: what batches carry and the attention maps are keyed by
    initializer_words: list[str] | None
    encoder_ids: list[list[int]] = field(default_factory=list)  # in each text encoder; empty: `ids` everywhere

    def ids_in(self, encoder: int) -> list[int]:
        """The tokens' ids in the family's `encoder`-th tokenizer and text encoder (T5's differ from CLIP's)."""
        return self.encoder_ids[encoder] if self.encoder_ids else self.ids

    def translate(self, token_ids: torch.Tensor, encoder: int) -> torch.Tensor:
        """First-tokenizer ids (any shape, -1 where padded) -> the same tokens' ids in `encoder`."""
        source = torch.tensor(self.ids, device=token_ids.device)
        target = torch.tensor(self.ids_in(encoder), device=token_ids.device)
        hits = token_ids.unsqueeze(-1) == source  # (..., N)
        return torch.where(hits.any(dim=-1), target[hits.int().argmax(dim=-1)], torch.full_like(token_ids, -1))


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
    # T5's matrix has spare rows past its tokenizer (32,128 for 32,100 tokens): grow it, never shrink it
    rows = text_encoder.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
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



def put_token_rows(tokenizer, text_encoder: torch.nn.Module, names: list[str], rows: torch.Tensor) -> list[int]:
    """Add `names` to a loaded tokenizer and give them these (N, d) embedding rows in `text_encoder` (an asset's
    tokens put onto its base model). Returns their ids."""
    check_new_tokens(tokenizer, names)
    tokenizer.add_tokens(names)
    ids = tokenizer.convert_tokens_to_ids(names)
    if len(tokenizer) > text_encoder.get_input_embeddings().weight.shape[0]:
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[ids] = rows.to(weight)
    return ids


def sum_rows_by_id(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, rows) pairs -> (unique ids, the rows of each id summed): a sparse embedding gradient."""
    ids = torch.cat([i for i, _ in parts])
    rows = torch.cat([r for _, r in parts])
    unique, inverse = torch.unique(ids, return_inverse=True)
    return unique, torch.zeros(len(unique), rows.shape[1], device=rows.device).index_add_(0, inverse, rows)


def frozen_rows_grad_sq(ids: torch.Tensor, rows: torch.Tensor, world_size: int = 1,
                        loss_scale: float | None = None) -> torch.Tensor:
    """Squared norm of the frozen embedding rows' gradient (`TokenRowsEmbedding.take_frozen_rows_grad`) as the
    whole matrix would hold it: averaged over ranks (as DDP averages), unscaled (as mixed precision unscales before
    clipping)."""
    if world_size > 1:
        gathered = [None] * world_size
        torch.distributed.all_gather_object(gathered, (ids.cpu(), rows.cpu()))
        ids, rows = sum_rows_by_id(gathered)
        rows = rows / world_size
    if loss_scale is not None:
        rows = rows / loss_scale
    return rows.pow(2).sum()


class TokenRowsEmbedding(torch.nn.Module):
    """The text encoder's input embedding with the placeholder rows held as their own (N, d) parameter.

    Phase 1 trains `rows` alone: every other row lives in `base` and is not a trainable tensor, so it stays
    bit-identical in every step and checkpoint, and AdamW keeps state for N rows instead of the whole
    vocabulary. Phase 2 trains `base` and `rows` together, which is the same update as one matrix (AdamW
    and weight decay act element by element, and the rows of `base` behind `rows` get no gradient).

    One thing the whole-matrix path has that this one would lose: gradient clipping counts the gradient that
    the frozen rows ("a", "photo", the padding) receive before they are written back. While `base` is frozen,
    that gradient is kept, row by row, from the backward pass (`take_frozen_rows_grad`), so clipping can count it
    as the released code does.
    """

    def __init__(self, base: torch.nn.Embedding, ids: list[int]):
        super().__init__()
        first = min(ids)
        if sorted(ids) != list(range(first, first + len(ids))):
            raise ValueError(f"placeholder ids {ids} are not consecutive")
        self.base = base
        self.first_id, self.count = first, len(ids)
        self.rows = torch.nn.Parameter(base.weight.detach()[first : first + len(ids)].clone())
        self._frozen_grads: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def weight(self) -> torch.Tensor:
        """The full matrix as one tensor (base with the placeholder rows in place), for reading."""
        return torch.cat([self.base.weight[: self.first_id], self.rows, self.base.weight[self.first_id + self.count :]])

    @property
    def num_embeddings(self) -> int:
        return self.base.num_embeddings

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        looked_up = self.base(input_ids)
        if torch.is_grad_enabled() and self.rows.requires_grad and not self.base.weight.requires_grad:
            looked_up = looked_up.detach().requires_grad_(True)
            looked_up.register_hook(functools.partial(self._keep_frozen_grad, input_ids))
        local = input_ids - self.first_id
        is_new = (local >= 0) & (local < self.count)
        new = torch.nn.functional.embedding(local.clamp(0, self.count - 1), self.rows)
        return torch.where(is_new.unsqueeze(-1), new.to(looked_up.dtype), looked_up)

    def _keep_frozen_grad(self, input_ids: torch.Tensor, grad: torch.Tensor) -> None:
        self._frozen_grads.append((input_ids.reshape(-1), grad.reshape(-1, grad.shape[-1]).float()))

    def take_frozen_rows_grad(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(ids, gradient rows) that the frozen rows received since the last call, summed per id, or None."""
        if not self._frozen_grads:
            return None
        summed = sum_rows_by_id(self._frozen_grads)
        self._frozen_grads.clear()
        return summed

    def merged(self) -> torch.nn.Embedding:
        """A plain embedding holding the learned rows (what an exported pipeline saves)."""
        merged = torch.nn.Embedding(self.num_embeddings, self.base.embedding_dim, padding_idx=self.base.padding_idx,
                                    device=self.rows.device, dtype=self.base.weight.dtype)
        with torch.no_grad():
            merged.weight.copy_(self.weight)
        return merged


def split_token_rows(text_encoder: CLIPTextModel, ids: list[int]) -> TokenRowsEmbedding:
    """Hold the placeholder rows of `text_encoder` as their own parameter (see `TokenRowsEmbedding`)."""
    embedding = text_encoder.get_input_embeddings()
    if isinstance(embedding, TokenRowsEmbedding):
        return embedding
    spliced = TokenRowsEmbedding(embedding, ids)
    text_encoder.set_input_embeddings(spliced)
    return spliced


@contextlib.contextmanager
def plain_token_embedding(text_encoder: CLIPTextModel):
    """Within the block, `text_encoder` holds a plain embedding with the learned rows in place, so it saves
    as an ordinary CLIP text model; the split embedding is put back afterwards."""
    embedding = text_encoder.get_input_embeddings()
    if not isinstance(embedding, TokenRowsEmbedding):
        yield text_encoder
        return
    text_encoder.set_input_embeddings(embedding.merged())
    try:
        yield text_encoder
    finally:
        text_encoder.set_input_embeddings(embedding)


@contextlib.contextmanager
def plain_token_embeddings(text_encoders: list[CLIPTextModel]):
    """`plain_token_embedding` for every text encoder of a model at once."""
    with contextlib.ExitStack() as stack:
        for encoder in text_encoders:
            stack.enter_context(plain_token_embedding(encoder))
        yield text_encoders
