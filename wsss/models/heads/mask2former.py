"""A Mask2Former-style mask-classification head, sized for CPU (``wsss.models.heads``).

Mask classification (MaskFormer: Cheng, Schwing, Kirillov, "Per-Pixel Classification is Not
All You Need for Semantic Segmentation", NeurIPS 2021) predicts a set of N (mask, class)
pairs instead of one class distribution per pixel; Mask2Former (Cheng, Misra, Schwing,
Kirillov, Girdhar, "Masked-attention Mask Transformer for Universal Image Segmentation",
CVPR 2022) restricts each query's cross-attention to the foreground of its own mask predicted
by the previous decoder layer. This module follows Mask2Former's design at a small width:

1. **Pixel decoder** (a light FPN in place of the paper's multi-scale deformable attention):
   four :class:`~wsss.models.heads.dpt.Reassemble` stages (the DPT head's) bring the four ViT blocks'
   tokens to 1/4, 1/8, 1/16, 1/32 of the input with ``hidden`` channels (readout "ignore"
   without prefix tokens, "add" with them); a top-down path, deepest first, computes
   ``y_i = out_i(lateral_i(x_i) + up(y_{i+1}))`` (lateral 1×1 conv, bilinear upsampling,
   output 3×3 conv-GroupNorm-ReLU). ``mask_features`` = a 1×1 conv of ``y`` at 1/4
   (B×hidden×H/4×W/4); ``y`` at 1/32, 1/16, 1/8 are the decoder's memory.
2. **Transformer decoder**: N learned query features and N learned query positional
   embeddings. Layer i cross-attends to level i mod 3 (1/32, 1/16, 1/8, 1/32, ... as in the
   paper), whose features get a learned level embedding (added to keys and values) and a 2-D
   sine positional encoding (added to the keys); then self-attention among the queries, then
   an MLP; each with a residual connection and a LayerNorm after it (post-norm, the paper's
   default). The cross-attention is *masked*: query q may attend to position j only where
   sigmoid(previous mask logits of q, resized bilinearly to the level) ≥ 0.5; a query whose
   mask is empty there attends everywhere (as in the paper), so no attention row is all masked.
3. **Predictions** before the first layer and after every layer (``layers + 1`` in all, used
   for deep supervision): the queries go through a shared LayerNorm, then class logits =
   Linear(hidden, K+1) (K = C+1 semantic classes, background 0, the last column "no object")
   and mask logits = ⟨MLP(query), mask_features⟩ per pixel (B×N×H/4×W/4).
4. **Semantic inference** (MaskFormer's): p[b, k] = Σ_q softmax(class)[b, q, k] ·
   sigmoid(mask[b, q]) upsampled to H×W, no-object column dropped, normalised over k
   (:func:`semantic_probabilities`); the head's ``seg`` is the log of that for the last
   prediction, so ``softmax(seg, 1)`` gives the class probabilities like the per-pixel heads.

Training uses bipartite matching on sampled points: ``wsss.train.mask_classification``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsss.models.heads.base import HeadOutput, QueryPredictions
from wsss.models.heads.dpt import TARGET_STRIDES, Reassemble

__all__ = [
    "LightFPN",
    "Mask2FormerHead",
    "MaskedDecoderLayer",
    "attention_mask",
    "semantic_probabilities",
    "sine_position_encoding",
]

ATTENTION_LEVELS = (3, 2, 1)  # indices into the four maps (1/4, 1/8, 1/16, 1/32): 1/32, 1/16, 1/8


def semantic_probabilities(pred: QueryPredictions, size: Sequence[int], eps: float = 1e-6) -> Tensor:
    """MaskFormer's semantic inference: B×K×H×W class probabilities, normalised over K.

    pred.class_logits: B×N×(K+1) (last column "no object", dropped after the softmax);
    pred.mask_logits: B×N×h'×w', upsampled bilinearly (align_corners=False) to ``size`` = (H, W)
    before the sigmoid. p[b, k, y, x] = Σ_q softmax(class_logits)[b, q, k] · sigmoid(mask)[b, q, y, x],
    clamped at ``eps`` (a pixel no query claims gets the uniform distribution), divided by its
    sum over k.
    """
    classes = pred.class_logits.softmax(dim=-1)[..., :-1]  # B×N×K
    masks = pred.mask_logits
    if tuple(masks.shape[-2:]) != tuple(size):
        masks = F.interpolate(masks, size=tuple(size), mode="bilinear", align_corners=False)
    p = torch.einsum("bnk,bnhw->bkhw", classes, masks.sigmoid()).clamp_min(eps)
    return p / p.sum(dim=1, keepdim=True)


def attention_mask(mask_logits: Tensor, size: Sequence[int], heads: int) -> Tensor:
    """Mask2Former's cross-attention mask from the previous prediction's mask logits.

    mask_logits: B×N×h'×w'; size: (h, w) of the attended level; returns B·heads×N×h·w bool,
    True = not allowed (``nn.MultiheadAttention``'s convention, batch-major: row b·heads + j),
    i.e. True where sigmoid(mask resized bilinearly to ``size``) < 0.5. A query whose mask is
    empty at that level gets an all-False row (attends everywhere). No gradient.
    """
    with torch.no_grad():
        resized = F.interpolate(mask_logits.detach(), size=tuple(size), mode="bilinear", align_corners=False)
        blocked = (resized.flatten(2).sigmoid() < 0.5)  # B×N×L
        blocked = blocked & ~blocked.all(dim=-1, keepdim=True)
        return blocked.repeat_interleave(heads, dim=0)


def sine_position_encoding(height: int, width: int, channels: int, device=None, dtype=None,
                           temperature: float = 10000.0) -> Tensor:
    """2-D sine positional encoding (Transformer style, per axis): 1×(h·w)×channels.

    The first channels/2 encode y, the rest x; each half is [sin(pos/T^(2i/c')) for i, then
    cos(...)] with positions the pixel centres normalised to (0, 2π). channels % 4 == 0.
    """
    if channels % 4:
        raise ValueError(f"sine positional encoding needs channels divisible by 4, got {channels}")
    quarter = channels // 4
    freq = temperature ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)  # c/4

    def axis(n: int) -> Tensor:  # n × c/2
        pos = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n * 2 * math.pi
        angles = pos[:, None] / freq[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    y = axis(height)[:, None, :].expand(height, width, channels // 2)
    x = axis(width)[None, :, :].expand(height, width, channels // 2)
    pos = torch.cat([y, x], dim=-1).reshape(1, height * width, channels)
    return pos.to(dtype) if dtype is not None else pos


def _groups(channels: int) -> int:
    return math.gcd(8, channels)


class LightFPN(nn.Module):
    """Top-down FPN over four maps B×hidden×h_i×w_i (1/4, 1/8, 1/16, 1/32, finest first) →
    four maps of the same shapes: y_i = out_i(lateral_i(x_i) + up(y_{i+1})), y_3 = out_3(lateral_3(x_3))
    (lateral: 1×1 conv; up: bilinear to x_i's size; out: 3×3 conv-GroupNorm-ReLU)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(hidden, hidden, 1) for _ in range(4))
        self.output = nn.ModuleList(
            nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
                          nn.GroupNorm(_groups(hidden), hidden), nn.ReLU())
            for _ in range(4)
        )

    def forward(self, maps: Sequence[Tensor]) -> list[Tensor]:
        """maps: 4 × B×hidden×h_i×w_i, finest first; returns the 4 FPN outputs, finest first."""
        outs: list[Tensor | None] = [None] * 4
        y = None
        for i in (3, 2, 1, 0):
            lateral = self.lateral[i](maps[i])
            if y is not None:
                lateral = lateral + F.interpolate(y, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            y = self.output[i](lateral)
            outs[i] = y
        return outs


class MaskedDecoderLayer(nn.Module):
    """One Mask2Former decoder layer: masked cross-attention → self-attention → MLP, each
    followed by residual + LayerNorm.

    forward(query B×N×c, query_pos B×N×c, memory B×L×c, memory_pos B×L×c (or 1×L×c),
    attn_mask B·heads×N×L bool or None) → B×N×c. Cross-attention: q = query + query_pos,
    k = memory + memory_pos, v = memory; self-attention: q = k = x + query_pos, v = x.
    """

    def __init__(self, hidden: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.heads = heads
        self.cross_attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        width = max(1, round(hidden * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(hidden, width), nn.ReLU(), nn.Linear(width, hidden))
        self.norm_cross, self.norm_self, self.norm_mlp = (nn.LayerNorm(hidden) for _ in range(3))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, query: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor,
                attn_mask: Tensor | None = None) -> Tensor:
        key = memory + memory_pos
        x = self.cross_attn(query + query_pos, key, memory, attn_mask=attn_mask, need_weights=False)[0]
        x = self.norm_cross(query + x)
        q = x + query_pos
        x = self.norm_self(x + self.self_attn(q, q, x, need_weights=False)[0])
        return self.norm_mlp(x + self.mlp(x))


class Mask2FormerHead(nn.Module):
    """Four blocks' tokens → :class:`HeadOutput` (``seg`` B×(C+1)×H×W log-probabilities and
    ``layers + 1`` :class:`QueryPredictions`, first to last).

    Args:
        dim: ViT width D.
        stride: input pixels per patch token (e.g. 8 or 16).
        num_classes: C foreground classes; the head predicts K = C+1 semantic classes
            (0 background) plus "no object": class logits B×N×(K+1).
        has_prefix: whether the ViT has prefix tokens (readout "add" then, else "ignore").
        hidden: channels of the pixel decoder and width of the transformer decoder (÷ 4 and
            ÷ ``heads``).
        queries: N, the number of queries.
        layers: decoder layers (round robin over 1/32, 1/16, 1/8).
        heads: attention heads.
        mlp_ratio: the decoder MLP's width / hidden.
    """

    def __init__(self, dim: int, stride: int, num_classes: int, has_prefix: bool, hidden: int = 64,
                 queries: int = 16, layers: int = 3, heads: int = 4, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if hidden % 4 or hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by 4 and by heads ({heads})")
        if queries < 1 or layers < 0 or num_classes < 1:
            raise ValueError(f"need queries >= 1, layers >= 0, num_classes >= 1; got {queries}, {layers}, "
                             f"{num_classes}")
        self.num_classes, self.hidden, self.heads, self.num_layers = num_classes, hidden, heads, layers
        readout = "add" if has_prefix else "ignore"
        self.reassemble = nn.ModuleList(Reassemble(dim, hidden, readout, stride, t) for t in TARGET_STRIDES)
        self.fpn = LightFPN(hidden)
        self.mask_features = nn.Conv2d(hidden, hidden, 1)
        self.query_feat = nn.Embedding(queries, hidden)
        self.query_pos = nn.Embedding(queries, hidden)
        self.level_embed = nn.Embedding(len(ATTENTION_LEVELS), hidden)
        self.layers = nn.ModuleList(MaskedDecoderLayer(hidden, heads, mlp_ratio) for _ in range(layers))
        self.decoder_norm = nn.LayerNorm(hidden)
        self.class_embed = nn.Linear(hidden, num_classes + 2)  # K + 1 = C + 2
        self.mask_embed = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                        nn.Linear(hidden, hidden))

    def pixel_decoder(self, tokens: Sequence[tuple[Tensor, Tensor | None]], grid: tuple[int, int]
                      ) -> tuple[Tensor, list[Tensor]]:
        """tokens → (mask_features B×hidden×H/4×W/4, the FPN's 4 maps B×hidden×h_i×w_i finest first)."""
        maps = [stage(patches, prefix, grid) for (patches, prefix), stage in zip(tokens, self.reassemble)]
        fpn = self.fpn(maps)
        return self.mask_features(fpn[0]), fpn

    def predict(self, query: Tensor, mask_features: Tensor) -> QueryPredictions:
        """query B×N×hidden, mask_features B×hidden×h×w → class logits B×N×(K+1), mask logits B×N×h×w."""
        q = self.decoder_norm(query)
        mask_logits = torch.einsum("bnc,bchw->bnhw", self.mask_embed(q), mask_features)
        return QueryPredictions(self.class_embed(q), mask_logits)

    def forward(self, tokens: Sequence[tuple[Tensor, Tensor | None]], grid: tuple[int, int],
                size: Sequence[int]) -> HeadOutput:
        """tokens: four (B×P×D patch tokens, B×p×D prefix tokens or None), shallow to deep;
        grid: (h, w) with h·w = P; size: the input's (H, W). Returns HeadOutput(seg B×(C+1)×H×W
        log-probabilities of the last prediction, queries: layers + 1 QueryPredictions)."""
        if len(tokens) != 4:
            raise ValueError(f"Mask2FormerHead reads 4 blocks' tokens, got {len(tokens)}")
        mask_features, fpn = self.pixel_decoder(tokens, grid)
        batch = mask_features.shape[0]
        memories, positions, sizes = [], [], []
        for level, i in enumerate(ATTENTION_LEVELS):
            feat = fpn[i]
            h, w = feat.shape[-2:]
            memories.append(feat.flatten(2).transpose(1, 2) + self.level_embed.weight[level])  # B×L×c
            positions.append(sine_position_encoding(h, w, self.hidden, feat.device, feat.dtype))  # 1×L×c
            sizes.append((h, w))
        query = self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1)
        query_pos = self.query_pos.weight.unsqueeze(0).expand(batch, -1, -1)
        predictions = [self.predict(query, mask_features)]
        for i, layer in enumerate(self.layers):
            level = i % len(ATTENTION_LEVELS)
            mask = attention_mask(predictions[-1].mask_logits, sizes[level], self.heads)
            query = layer(query, query_pos, memories[level], positions[level], mask)
            predictions.append(self.predict(query, mask_features))
        seg = semantic_probabilities(predictions[-1], size).log()
        return HeadOutput(seg, predictions)
