"""TokenCut-style saliency: a normalized cut on a ViT's last-block keys (Wang et al., 2022),
with MaskCut-style repeats for several objects (Wang et al., 2023).

Per image, with k_i the key of patch token i (heads concatenated, prefix tokens dropped):

    W_ij = 1 if cos(k_i, k_j) > τ else ε                      (τ = 0.2, ε = 1e-5)
    (D − W) x = λ D x,  D = diag(Σ_j W_ij)                     solved through the symmetric form
    L = D^{-1/2} (D − W) D^{-1/2} = I − D^{-1/2} W D^{-1/2},  L y = λ y,  x = D^{-1/2} y

x = the eigenvector of the second-smallest λ (``torch.linalg.eigh``, batched over images, in
float64). Bipartition at the mean of x; the foreground is the side holding the patch with the
largest |x_i| (the "seed"; the rule does not depend on the eigenvector's sign), reduced to the
4-connected component of the h×w patch grid that contains the seed.

Repeats (``objects`` > 1): the patches already found get weight ε to every patch (themselves
included) and the cut runs again; the result is the union of the objects. When the seed of a
repeat falls on an already-found patch, the remaining graph holds no separable group (the
cheapest cut is the one that isolates the masked patches) and that image stops adding objects.

Quality: the keys of a self-supervised ViT (DINO) group patches by object, which is what this
needs; on a classifier trained from tags on the data set itself, the last-block keys encode what
separates the classes, so the cut is weaker and often follows colour or texture regions instead
of objects. Cost: one forward plus one P×P eigendecomposition per image and object (P patches).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsss.models.attention_capture import vit_blocks
from wsss.models.vit_geometry import TokenLayout, token_layout

__all__ = ["KeyCapture", "last_block_keys", "normalized_cut", "grid_to_image"]


class KeyCapture:
    """Context manager recording the attention keys of one block of a timm ViT.

    ``with KeyCapture(model) as cap: model(x)`` then ``cap.keys`` is ``B×N×D`` (all N tokens,
    prefix included; D = heads·head_dim, heads concatenated) from the last forward. It can be
    entered around any forward (e.g. the one GETAM already runs), so the keys cost nothing extra.

    The hook sits on the block's ``attn.k_norm`` (``nn.Identity`` unless the model uses qk-norm),
    whose output is exactly the ``B×heads×N×head_dim`` key tensor the attention multiplies with,
    whether or not the fused kernel is in use. Registered on enter, removed on exit; the record is
    dropped on exit.
    """

    def __init__(self, model: nn.Module, block: int = -1) -> None:
        blocks = vit_blocks(model)
        if not -len(blocks) <= block < len(blocks):
            raise ValueError(f"block {block} out of range for a model with {len(blocks)} blocks "
                             f"(valid: {-len(blocks)}..{len(blocks) - 1})")
        attn = blocks[block].attn
        if not isinstance(getattr(attn, "k_norm", None), nn.Module):
            raise TypeError(f"block {block}: `attn` ({type(attn).__name__}) has no `k_norm` module; "
                            "keys can be captured from timm's standard Attention only")
        self._module = attn.k_norm
        self._handle: torch.utils.hooks.RemovableHandle | None = None
        self._keys: Tensor | None = None

    @property
    def keys(self) -> Tensor:
        """``B×N×D`` keys of the last forward run inside the context."""
        if self._keys is None:
            raise RuntimeError("no keys recorded: run a forward inside the context first")
        return self._keys

    def _on_keys(self, module: nn.Module, args, output: Tensor) -> None:
        B, heads, N, head_dim = output.shape
        self._keys = output.transpose(1, 2).reshape(B, N, heads * head_dim)

    def __enter__(self) -> "KeyCapture":
        if self._handle is not None:
            raise RuntimeError("KeyCapture is not re-entrant")
        self._handle = self._module.register_forward_hook(self._on_keys)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._keys = None


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode and no grad inside; every module's own training flag restored on exit."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, flag in flags:
            module.training = flag


def last_block_keys(model: nn.Module, images: Tensor) -> tuple[Tensor, TokenLayout]:
    """Keys of the patch tokens in the last block.

    images: B×3×h×w model input (normalised; h, w multiples of the model's stride).
    Returns (B×P×D float keys, P = grid h'·w' patches in row-major order; the token layout).
    Runs in eval mode without grad; the model's training flags are restored.
    """
    layout = token_layout(model, images.shape[-2:])
    with _inference(model), KeyCapture(model) as capture:
        forward = getattr(model, "forward_features", model)
        forward(images)
        keys = capture.keys
    if keys.shape[1] != layout.num_tokens:
        raise ValueError(f"captured {keys.shape[1]} tokens, expected {layout.num_tokens} "
                         f"({layout.num_prefix_tokens} prefix + grid {layout.grid})")
    return keys[:, layout.num_prefix_tokens:], layout


def _second_eigenvector(weights: Tensor) -> Tensor:
    """B×P×P symmetric float64 W → B×P generalised eigenvector x of the second-smallest λ."""
    inv_sqrt = weights.sum(-1).rsqrt()
    laplacian = -inv_sqrt[:, :, None] * weights * inv_sqrt[:, None, :]
    laplacian.diagonal(dim1=-2, dim2=-1).add_(1.0)
    laplacian = 0.5 * (laplacian + laplacian.transpose(-2, -1))
    _, vectors = torch.linalg.eigh(laplacian)
    return inv_sqrt * vectors[..., 1]


def _component(mask: Tensor, seed: Tensor) -> Tensor:
    """B×h×w bool mask, B seed indices (row-major) → the 4-connected component holding each
    seed (empty where the seed is outside the mask). Flood fill by repeated 4-neighbour growth."""
    B, h, w = mask.shape
    rows = torch.arange(B, device=mask.device)
    component = torch.zeros_like(mask).view(B, h * w)
    component[rows, seed] = mask.view(B, h * w)[rows, seed]
    component = component.view(B, h, w)
    while True:
        grown = component.clone()
        grown[:, 1:] |= component[:, :-1]
        grown[:, :-1] |= component[:, 1:]
        grown[:, :, 1:] |= component[:, :, :-1]
        grown[:, :, :-1] |= component[:, :, 1:]
        grown &= mask
        if torch.equal(grown, component):
            return component
        component = grown


def normalized_cut(
    keys: Tensor, grid: Sequence[int], tau: float = 0.2, eps: float = 1e-5, objects: int = 1
) -> Tensor:
    """Foreground patches by normalized cut (see the module docstring).

    keys: B×P×D float patch features (P = h·w, row-major).  grid: (h, w).
    Returns B×h×w bool: the union of up to ``objects`` objects per image.
    """
    h, w = int(grid[0]), int(grid[1])
    B, P, _ = keys.shape
    if P != h * w:
        raise ValueError(f"keys hold {P} patches but grid {h}×{w} has {h * w}")
    if objects < 1:
        raise ValueError(f"objects={objects}: expected at least 1")
    if P < 3:  # too few patches to cut (a tiny image): all of it is the object
        return torch.ones(B, h, w, dtype=torch.bool, device=keys.device)
    unit = F.normalize(keys.detach().double(), dim=-1)
    similar = (unit @ unit.transpose(-2, -1)) > tau
    found = torch.zeros(B, P, dtype=torch.bool, device=keys.device)
    done = torch.zeros(B, dtype=torch.bool, device=keys.device)
    rows = torch.arange(B, device=keys.device)
    for _ in range(objects):
        active = ~found
        linked = similar & active[:, :, None] & active[:, None, :]
        weights = linked.double() * (1.0 - eps) + eps  # 1 where linked, ε elsewhere
        x = _second_eigenvector(weights)
        seed = x.abs().argmax(-1)
        upper = x > x.mean(-1, keepdim=True)
        side = upper == upper[rows, seed][:, None]
        done |= found[rows, seed] | (active.sum(-1) < 2)
        new = _component((side & active & ~done[:, None]).view(B, h, w), seed).view(B, P)
        found |= new
        if bool(done.all()):
            break
    return found.view(B, h, w)


def grid_to_image(masks: Tensor, size: Sequence[int]) -> Tensor:
    """B×h×w bool patch masks → B×H×W bool: bilinear upsampling (align_corners=False), > 0.5.

    Straight edges between patches come back where they are (at an integer scale); convex
    corners are cut and concave ones filled, so outlines are smooth instead of staircase blocks.
    Small objects shrink: an isolated patch comes back as a diamond (40 of its 64 pixels at 8×).
    """
    H, W = int(size[0]), int(size[1])
    if masks.shape[-2:] == (H, W):
        return masks.clone()
    up = F.interpolate(masks[:, None].float(), size=(H, W), mode="bilinear", align_corners=False)
    return up[:, 0] > 0.5
