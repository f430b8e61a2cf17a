"""Capturing cross-attention probabilities at the layers the attention loss uses, and nowhere else (which
layers those are is the model family's to say).

The released code replaced all attention processors with a plain softmax-matmul one and kept every map of
resolution <= 32x32 with its graph, which disables fused attention everywhere (the 64x64 self-attention
included) and is the source of its out-of-memory reports. Here only the chosen cross-attention layers run
an explicit softmax; every other layer keeps the processor it had (SDPA). A family's `released` capture gives
the released behaviour back, for the benchmark's comparison row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def token_positions(input_ids: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Index of each token id in its prompt: input_ids (B, T), token_ids (B, K) -> (B, K); -1 where absent."""
    hits = input_ids.unsqueeze(1) == token_ids.unsqueeze(2)  # (B, K, T)
    return torch.where(hits.any(dim=2), hits.float().argmax(dim=2), torch.full_like(token_ids, -1))


def sum_over_keys(maps: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """maps (B, Q, T) over the text keys, positions (B, K, P) of each token's P keys (-1: none) -> (B, Q, K):
    each token's attention summed over its keys (an MM-DiT reading CLIP and T5 has one key per encoder)."""
    batch, k, p = positions.shape
    index = positions.clamp(min=0).reshape(batch, 1, k * p).expand(-1, maps.shape[1], -1)
    picked = torch.gather(maps, 2, index).reshape(batch, maps.shape[1], k, p)
    return (picked * (positions >= 0).to(maps.dtype).unsqueeze(1)).sum(dim=-1)


@dataclass
class AttentionStore:
    """The latest attention probabilities of each captured layer, every batch row (the readers pick theirs).

    A layer's entry is overwritten on every call, so gradient checkpointing's recomputation does not
    duplicate it. Keeping all rows costs nothing extra: autograd keeps the probabilities for the backward pass.
    """

    maps: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (B, heads, HW, T)

    def clear(self) -> None:
        self.maps.clear()

    def mean_map(self, names: list[str], rows: slice) -> torch.Tensor:
        """Mean over the given layers and their heads for the batch rows `rows`: (B', HW, T)."""
        missing = [name for name in names if name not in self.maps]
        if missing:
            raise RuntimeError(f"no attention was captured for {missing[0]}; was the denoiser run with capture on?")
        return torch.stack([self.maps[name][rows].mean(dim=1) for name in names]).mean(dim=0)


class CapturingAttnProcessor:
    """Attention with an explicit softmax whose probabilities go to the store (graph kept).

    The computation follows diffusers' `AttnProcessor` (diffusers.models.attention_processor) step by step;
    the one addition is keeping `probs`.
    """

    def __init__(self, store: AttentionStore, name: str, keep: bool = True):
        self.store = store
        self.name = name
        self.keep = keep

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key, value = attn.to_k(context), attn.to_v(context)
        query, key, value = (attn.head_to_batch_dim(x) for x in (query, key, value))
        probs = attn.get_attention_scores(query, key, attention_mask)  # (B*heads, HW, T)
        if self.keep:
            self.store.maps[self.name] = probs.view(batch, attn.heads, *probs.shape[1:])
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class AttentionCapture:
    """Installs capturing processors on some attention layers of a denoiser (anything with diffusers'
    `attn_processors` / `set_attn_processor`) and puts the previous ones back on removal.

    `loss_layers` are the maps `token_maps` averages. By default only they are replaced and kept; the
    benchmark's released-code row keeps more (`keep`) and replaces every processor (`replace`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_layers: list[str],
        keep: list[str] | None = None,
        replace: list[str] | None = None,
    ):
        self.model = model
        self.loss_layers = list(loss_layers)
        self.keep = list(keep) if keep is not None else list(loss_layers)
        self.replace = list(replace) if replace is not None else list(self.keep)
        if not set(self.loss_layers) <= set(self.keep) <= set(self.replace):
            raise ValueError("loss layers must be kept, and kept layers replaced")
        self.store = AttentionStore()
        # made once, so a reinstalled capture is the same objects (a compiled denoiser's guards still hold)
        self.processors = {
            name: CapturingAttnProcessor(self.store, name, keep=name in self.keep) for name in self.replace
        }
        self._previous: dict | None = None

    def install(self) -> "AttentionCapture":
        current = self.model.attn_processors
        self._previous = dict(current)
        self.model.set_attn_processor({name: self.processors.get(name, proc) for name, proc in current.items()})
        return self

    def select(self, indices: list[int]) -> "AttentionCapture":
        """Keep only these of the loss layers (`method.attention_layers`: indices in the denoiser's order); the
        others go back to their own processors unless the released capture keeps them."""
        if not indices or any(not 0 <= i < len(self.loss_layers) for i in indices):
            raise ValueError(f"method.attention_layers={list(indices)} must pick among the {len(self.loss_layers)} "
                             f"layers the attention loss can read here (indices 0-{len(self.loss_layers) - 1}).")
        dropped = set(self.loss_layers) - {self.loss_layers[i] for i in indices}
        self.loss_layers = [self.loss_layers[i] for i in sorted(set(indices))]
        if set(self.keep) == dropped | set(self.loss_layers):  # the default capture: replace only what it reads
            self.keep = list(self.loss_layers)
            self.replace = [name for name in self.replace if name not in dropped]
            self.processors = {name: p for name, p in self.processors.items() if name not in dropped}
        return self

    @property
    def installed(self) -> bool:
        return self._previous is not None

    def remove(self) -> None:
        if self._previous is not None:
            self.model.set_attn_processor(self._previous)
            self._previous = None
        self.store.clear()

    def __enter__(self) -> "AttentionCapture":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.remove()

    def token_maps(self, positions: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """Per-token maps averaged over the captured layers and heads, for the batch rows `rows` of the last
        denoiser call (training: the instance rows, before the class images; guidance: the conditional half).

        positions: (B, K) index of each token among the text keys, or (B, K, P) its P keys (their maps are
        summed), -1 where absent (a zero map); B the rows read. Returns (B, K, r, r) with r the layers' side.
        """
        mean = self.store.mean_map(self.loss_layers, rows)  # (B, HW, T)
        side = int(round(mean.shape[1] ** 0.5))
        keys = positions if positions.dim() == 3 else positions.unsqueeze(-1)
        picked = sum_over_keys(mean, keys)  # (B, HW, K)
        return picked.permute(0, 2, 1).reshape(positions.shape[0], positions.shape[1], side, side)


class JointAttentionProbe:
    """A joint (MM-DiT) attention processor wrapped so that the text-to-image maps the loss needs are kept: the
    image queries x the text keys, softmax over the text keys only (what cross-attention gives a UNet), averaged
    over the heads (B, 1, HW, T). The block's own attention still runs through the processor it had, fused;
    the probe adds one (HW x T) product per head, not the joint (HW + T)^2 one.
    """

    def __init__(self, store: AttentionStore, name: str, processor):
        self.store, self.name, self.processor = store, name, processor

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        if encoder_hidden_states is not None:
            rotary = kwargs.get("image_rotary_emb", args[0] if args else None)  # FLUX passes it positionally
            self.store.maps[self.name] = text_attention(attn, hidden_states, encoder_hidden_states, rotary)
        return self.processor(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)


def text_attention(attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                   rotary: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """(B, 1, HW, T): softmax over the text keys of the image queries' logits, mean over the heads, computed as
    diffusers' joint processors compute the joint logits (projections, per-head norms, 1/sqrt(d) scale; FLUX
    also rotates queries and keys by their positions: `rotary` is its (cos, sin) over [text; image])."""
    from diffusers.models.embeddings import apply_rotary_emb

    batch, text = hidden_states.shape[0], encoder_hidden_states.shape[1]
    query = attn.to_q(hidden_states)
    key = attn.add_k_proj(encoder_hidden_states)
    head_dim = query.shape[-1] // attn.heads
    query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, HW, d)
    key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, T, d)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_added_k is not None:
        key = attn.norm_added_k(key)
    if rotary is not None:
        cos, sin = rotary
        query = apply_rotary_emb(query, (cos[text:], sin[text:]))
        key = apply_rotary_emb(key, (cos[:text], sin[:text]))
    probs = (query @ key.transpose(-1, -2) * head_dim**-0.5).softmax(dim=-1)  # (B, heads, HW, T)
    return probs.mean(dim=1, keepdim=True)


class JointAttentionCapture(AttentionCapture):
    """`AttentionCapture` for joint attention: each loss layer's processor is wrapped by a `JointAttentionProbe`;
    every other layer, and the joint attention itself, keep their processors. The maps come at the token grid's
    side and are average-pooled to `side` (the loss resolution) when that is coarser."""

    def __init__(self, model: torch.nn.Module, loss_layers: list[str], side: int):
        self.model, self.loss_layers, self.side = model, list(loss_layers), side
        self.keep, self.replace, self.processors = list(loss_layers), list(loss_layers), {}  # probes made at install
        self.store = AttentionStore()
        self._previous: dict | None = None

    def token_maps(self, positions: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        maps = super().token_maps(positions, rows)  # (B, K, g, g) at the token grid
        if maps.shape[-1] == self.side:
            return maps
        return torch.nn.functional.adaptive_avg_pool2d(maps, self.side)

    def install(self) -> "JointAttentionCapture":
        current = self.model.attn_processors
        self._previous = dict(current)
        probes = {name: JointAttentionProbe(self.store, name, current[name]) for name in self.loss_layers}
        self.model.set_attn_processor({name: probes.get(name, proc) for name, proc in current.items()})
        return self
