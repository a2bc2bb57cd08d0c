"""Square Attack: score-based black-box random search (forward passes only, no gradients).

Andriushchenko, Croce, Flammarion & Hein (2020), "Square Attack: a query-efficient black-box
adversarial attack via random search" (ECCV). Each iteration changes the current best point
inside one random square window (side ``s = round(sqrt(p * H * W))``) and keeps the change if
the loss went up. The fraction ``p`` of pixels touched starts at ``p_init`` and halves at
iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a 10000-query run, rescaled to
the query budget (the paper's schedule).

* ``linf``: vertical-stripe initialisation (every column of every channel gets ``+-eps``), then
  the window of each channel is set to ``+-eps`` (a proposal that would change nothing because
  of clipping is replaced by the opposite signs, as the reference implementation redraws).
* ``l2``: the paper's tiling of pseudo-Gaussian blocks for the start; each update puts a new
  pseudo-Gaussian block (two halves of opposite sign, random orientation) into window 1 on top of
  the old content, empties window 2 and rescales so the mass of both windows plus the unused
  budget ``eps^2 - ||delta||^2`` goes into window 1, then renormalises ``||delta||_2 = eps``
  (before clipping to the box).
* ``l1``: the L1 adaptation of Croce & Hein (2021, "Mind the box: l1-APGD for sparse adversarial
  attacks on image classifiers", ICML; part of their L1 AutoAttack): the L2 scheme with blocks of
  nested rectangles weighted ``1 / (k+1)^4`` (more peaked) normalised to unit L1 norm, the L1 mass
  of both windows plus the unused budget ``eps - ||delta||_1`` moved into window 1, and every
  point projected exactly onto the L1 ball intersected with the box (the start is the
  projection of the block tiling, which keeps its largest entries).

Shapes: images ``(B, C, H, W)`` are attacked as they are; ``(B, D)`` inputs are viewed as
``(B, 1, 1, D)`` and ``(B, C, L)`` as ``(B, C, 1, L)``: the "square" is then an interval of about
``p * D`` features. Window positions are drawn per sample (the reference code loops over images).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from advlab import streams
from advlab._checks import check_int
from advlab.attacks._core import finalize, model_guard, prepare, reached, reject_targeted
from advlab.attacks._iterate import BestIterate, PassCount
from advlab.attacks.losses import LossFn, get_loss
from advlab.attacks.registry import register_attack
from advlab.attacks.result import AttackResult, bounded_result
from advlab.streams import Randomness
from advlab.threat import ThreatModel, flat, lp_norm, project_l1_box

_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # p halves after each (of 10000)


def p_schedule(p_init: float, iteration: int, queries: int) -> float:
    """Fraction of pixels changed at ``iteration`` (0-based) of a run with ``queries`` queries."""
    scaled = int(iteration / queries * 10000)
    return p_init / 2 ** sum(scaled > step for step in _SCHEDULE)


def _as_image(x: Tensor) -> Tensor:
    """``(B, D)`` -> ``(B, 1, 1, D)``, ``(B, C, L)`` -> ``(B, C, 1, L)``, images unchanged."""
    if x.dim() == 2:
        return x.reshape(x.shape[0], 1, 1, x.shape[1])
    if x.dim() == 3:
        return x.unsqueeze(2)
    if x.dim() == 4:
        return x
    raise ValueError(f"square supports inputs (B, D), (B, C, L) or (B, C, H, W), got shape {tuple(x.shape)}")


def _window_size(p: float, h: int, w: int, norm: str) -> tuple[int, int]:
    """Window ``(height, width)``: a square of area ``p*H*W`` (an interval for 1-row inputs)."""
    smallest = 1 if norm == "linf" else 3
    if h > 1 and w > 1:
        side = max(int(round(math.sqrt(p * h * w))), smallest)
        if norm == "l2" and side % 2 == 0:
            side += 1
        side = min(side, min(h, w) - 1 if norm == "linf" else min(h, w))
        return max(side, 1), max(side, 1)
    length = max(int(round(p * h * w)), smallest)
    length = max(1, min(length, h * w - 1 if norm == "linf" and h * w > 1 else h * w))
    return (length, 1) if h > 1 else (1, length)


def _random_window(n: int, h: int, w: int, size: tuple[int, int], generator: Randomness,
                   device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """A random window per sample: mask ``(n, 1, H, W)`` and in-window offsets ``(n, H)``, ``(n, W)``."""
    sh, sw = size
    top = streams.randint(h - sh + 1, (n,), generator, device=device)
    left = streams.randint(w - sw + 1, (n,), generator, device=device)
    rows = torch.arange(h, device=device)[None] - top[:, None]  # (n, H)
    cols = torch.arange(w, device=device)[None] - left[:, None]  # (n, W)
    inside = ((rows >= 0) & (rows < sh))[:, :, None] & ((cols >= 0) & (cols < sw))[:, None, :]
    return inside[:, None], rows.clamp(0, sh - 1), cols.clamp(0, sw - 1)


def _signs(shape: tuple[int, ...], like: Tensor, generator: Randomness) -> Tensor:
    return streams.randint(2, shape, generator, device=like.device).to(like.dtype) * 2 - 1


def _orient(block: Tensor, n: int, generator: Randomness) -> Tensor:
    """A square ``block`` ``(a, a)`` transposed with probability 1/2: one draw for the batch
    from a ``torch.Generator`` (as the reference code), one per sample ``(n, 1, a, a)`` from
    :class:`~advlab.streams.PointStreams`."""
    if isinstance(generator, streams.PointStreams):
        flip = streams.rand((n,), generator, device=block.device) > 0.5
        return torch.where(flip[:, None, None, None], block.T, block)
    return block.T if bool(torch.rand(1, generator=generator, device=block.device) > 0.5) else block


def _view(per_sample: Tensor) -> Tensor:
    return per_sample.reshape(-1, 1, 1, 1)


# ---------------------------------------------------------------------------------------- linf
def _linf_init(x: Tensor, eps: Tensor, bounds: tuple[float, float], generator: Randomness) -> Tensor:
    """Vertical stripes: ``x + eps * s`` with a random sign per (channel, column)."""
    n, c, _, w = x.shape
    return (x + _view(eps) * _signs((n, c, 1, w), x, generator)).clamp(*bounds)


def _linf_step(x: Tensor, x_best: Tensor, eps: Tensor, p: float, bounds: tuple[float, float],
               generator: Randomness) -> Tensor:
    """Set a random window of every channel to ``+-eps``: ``(n, C, H, W)``."""
    n, c, h, w = x.shape
    mask, _, _ = _random_window(n, h, w, _window_size(p, h, w, "linf"), generator, x.device)
    signs = _signs((n, c, 1, 1), x, generator) * _view(eps)
    proposal = torch.where(mask, x + signs, x_best).clamp(*bounds)
    unchanged = ((proposal - x_best).abs().flatten(1).amax(dim=1) < 1e-7)[:, None, None, None]
    flipped = torch.where(mask, x - signs, x_best).clamp(*bounds)
    return torch.where(unchanged, flipped, proposal)


# ------------------------------------------------------------------------------------------ l2
def _unit(block: Tensor, norm: str) -> Tensor:
    return block / (block.norm() if norm == "l2" else block.abs().sum())


def _pseudo_gaussian(a: int, b: int, device: torch.device, dtype: torch.dtype, norm: str = "l2") -> Tensor:
    """Nested centred rectangles weighted ``1 / (k+1)^2`` (paper, L2 update; ``1 / (k+1)^4`` for
    ``l1``), unit norm in ``norm``: ``(a, b)``."""
    levels = max(a // 2, b // 2) + 1
    dist = torch.maximum((torch.arange(a, device=device) - a // 2).abs()[:, None],
                         (torch.arange(b, device=device) - b // 2).abs()[None, :])  # (a, b)
    weights = 1.0 / torch.arange(1, levels + 1, device=device, dtype=dtype) ** (2 if norm == "l2" else 4)
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[k] = sum_{j >= k} weights[j]
    block = tail[dist]
    return _unit(block, norm)


def l2_block(a: int, b: int, device: torch.device, dtype: torch.dtype = torch.float32,
             norm: str = "l2") -> Tensor:
    """The update block ``eta`` of the L2 Square Attack: two pseudo-Gaussian halves of opposite
    sign (split along the rows, or the columns for a single row), unit L2 norm: ``(a, b)``.
    ``norm="l1"``: the L1 attack's block (weights ``1 / (k+1)^4``, unit L1 norm)."""
    if a >= 2:
        top = _pseudo_gaussian(a // 2, b, device, dtype, norm)
        block = torch.cat([top, -_pseudo_gaussian(a - a // 2, b, device, dtype, norm)], dim=0)
    elif b >= 2:
        left = _pseudo_gaussian(a, b // 2, device, dtype, norm)
        block = torch.cat([left, -_pseudo_gaussian(a, b - b // 2, device, dtype, norm)], dim=1)
    else:
        block = torch.ones(a, b, device=device, dtype=dtype)
    return _unit(block, norm)


def _l2_normalise(delta: Tensor, eps: Tensor) -> Tensor:
    return delta * _view(eps / lp_norm(delta, "l2").clamp_min(1e-12))


def _tiling(x: Tensor, generator: Randomness, norm: str = "l2") -> Tensor:
    """Tiling of ``(H//5) x (W//5)`` blocks with random signs per (sample, channel): ``(n, C, H, W)``."""
    n, c, h, w = x.shape
    th, tw = max(h // 5, 1), max(w // 5, 1)
    delta = torch.zeros_like(x)
    for top in range(max((h - 5 * th) // 2, 0), h - th + 1, th):
        for left in range(max((w - 5 * tw) // 2, 0), w - tw + 1, tw):
            block = l2_block(th, tw, x.device, x.dtype, norm)
            if th == tw:
                block = _orient(block, n, generator)
            delta[:, :, top:top + th, left:left + tw] = block * _signs((n, c, 1, 1), x, generator)
    return delta


def _l2_init(x: Tensor, eps: Tensor, bounds: tuple[float, float], generator: Randomness) -> Tensor:
    """The block tiling, rescaled to L2 norm ``eps``, clipped."""
    return (x + _l2_normalise(_tiling(x, generator), eps)).clamp(*bounds)


def _windows(x: Tensor, p: float, generator: Randomness, norm: str = "l2"
             ) -> tuple[Tensor, Tensor, Tensor]:
    """Two random windows per sample and the update block placed in window 1 (random
    orientation): masks ``(n, 1, H, W)`` twice and the placed block ``(n, 1, H, W)``."""
    n, _, h, w = x.shape
    size = _window_size(p, h, w, "l2")
    mask1, rows, cols = _random_window(n, h, w, size, generator, x.device)
    mask2, _, _ = _random_window(n, h, w, size, generator, x.device)
    blocks = l2_block(*size, x.device, x.dtype, norm)
    blocks = torch.stack([blocks, blocks.T]) if size[0] == size[1] else blocks[None]
    choice = streams.randint(len(blocks), (n,), generator, device=x.device)
    placed = blocks[choice[:, None, None], rows[:, :, None], cols[:, None, :]][:, None] * mask1  # (n,1,H,W)
    return mask1, mask2, placed


def _l2_step(x: Tensor, x_best: Tensor, eps: Tensor, p: float, bounds: tuple[float, float],
             generator: Randomness) -> Tensor:
    """Move the mass of windows 1 and 2 (plus the unused budget) into window 1: ``(n, C, H, W)``."""
    n, c, h, w = x.shape
    delta = x_best - x
    mask1, mask2, placed = _windows(x, p, generator)

    def channel_norm(t: Tensor) -> Tensor:  # (n, C, 1, 1)
        return t.square().sum(dim=(2, 3), keepdim=True).sqrt()

    old = delta * mask1
    new = placed * _signs((n, c, 1, 1), x, generator) + old / channel_norm(old).clamp_min(1e-12)
    unused = (eps.square() - lp_norm(delta, "l2").square()).clamp_min(0.0)  # (n,)
    union = mask1 | mask2
    budget = (_view(unused) / c + channel_norm(delta * union).square()).sqrt()
    new = new / channel_norm(new).clamp_min(1e-12) * budget
    delta = torch.where(union, torch.zeros_like(delta), delta) + new
    return (x + _l2_normalise(delta, eps)).clamp(*bounds)


# ------------------------------------------------------------------------------------------ l1
def _l1_project(x: Tensor, delta: Tensor, eps: Tensor, bounds: tuple[float, float]) -> Tensor:
    """``x`` plus the exact projection of ``delta`` onto the L1 ball of radius ``eps`` (a hair
    inside) intersected with the box: ``(n, C, H, W)``."""
    low, high = bounds
    base = flat(x)
    rows = project_l1_box(flat(delta), eps * (1 - 1e-6), low - base, high - base)
    return (x + rows.view_as(x)).clamp(*bounds)


def _l1_init(x: Tensor, eps: Tensor, bounds: tuple[float, float], generator: Randomness) -> Tensor:
    """The L1 block tiling projected onto the L1 ball intersected with the box."""
    return _l1_project(x, _tiling(x, generator, "l1"), eps, bounds)


def _l1_step(x: Tensor, x_best: Tensor, eps: Tensor, p: float, bounds: tuple[float, float],
             generator: Randomness) -> Tensor:
    """The L2 update with L1 masses: windows 1 and 2 plus the unused budget into window 1."""
    c = x.shape[1]
    delta = x_best - x
    mask1, mask2, placed = _windows(x, p, generator, "l1")

    def mass(t: Tensor) -> Tensor:  # (n, C, 1, 1)
        return t.abs().sum(dim=(2, 3), keepdim=True)

    old = delta * mask1
    new = placed * _signs((x.shape[0], c, 1, 1), x, generator) + old / mass(old).clamp_min(1e-12)
    union = mask1 | mask2
    unused = (eps - lp_norm(delta, "l1")).clamp_min(0.0)  # (n,)
    new = new / mass(new).clamp_min(1e-12) * (_view(unused) / c + mass(delta * union))
    delta = torch.where(union, torch.zeros_like(delta), delta) + new
    return _l1_project(x, delta, eps, bounds)


# -------------------------------------------------------------------------------------- search
def _random_search(query, x: Tensor, y: Tensor, eps: Tensor, norm: str,
                   bounds: tuple[float, float], loss_fn: LossFn, targeted: bool, queries: int,
                   p_init: float, generator: Randomness) -> BestIterate:
    """One run of ``queries`` queries on images ``x`` ``(n, C, H, W)``; ``query(rows, images)``
    maps the images of rows ``rows`` (``None``: all n) to logits. ``y``: the labels the loss takes
    (the target classes when ``targeted``)."""
    init, step = {"linf": (_linf_init, _linf_step), "l2": (_l2_init, _l2_step), "l1": (_l1_init, _l1_step)}[norm]
    x_start = init(x, eps, bounds, generator)
    logits = query(None, x_start)
    best = BestIterate.start(x_start, loss_fn(logits, y), reached(logits, y, targeted=targeted))
    for iteration in range(queries - 1):
        active = best.remaining()  # (A,) only still-robust samples are queried
        if active.numel() == 0:
            break
        p = p_schedule(p_init, iteration, queries)
        x_new = step(x[active], best.x[active], eps[active], p, bounds, streams.for_rows(generator, active))
        logits = query(active, x_new)
        best.update(active, x_new, loss_fn(logits, y[active]), reached(logits, y[active], targeted=targeted))
    return best


@register_attack("square", kind="bounded")
@reject_targeted
def square(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, queries: int = 1000,
           p_init: float = 0.8, restarts: int = 1, loss: str | LossFn = "margin",
           target: Tensor | None = None, generator: Randomness = None,
           return_info: bool = False) -> Tensor | AttackResult:
    """Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020): black-box random search.

    Uses forward passes only, under ``torch.no_grad()``: it works on models without gradients.

    Args:
        model: classifier returning logits ``(B, K)``.
        x: clean inputs ``(B, C, H, W)``, ``(B, C, L)`` or ``(B, D)``; y: the true labels ``(B,)``.
        threat: ``linf``, ``l2`` or ``l1`` threat model (``eps`` float or ``(B,)``).
        queries: forward passes per sample and run (default 1000): one for the start point and
            ``queries - 1`` random-search steps. With the clean pass of the input checks a sample
            costs at most ``restarts * queries + 1`` queries; fooled samples stop being queried.
        p_init: initial fraction of pixels in a window (default 0.8; the paper uses 0.05 on
            ImageNet, 0.3 on CIFAR-10, 0.8 on MNIST for ``linf``, 0.1 for ``l2``).
        restarts: runs from fresh random starts for the samples still robust (default 1).
        loss: ``"margin"`` (default; the C&W margin ``max_{j!=y} z_j - z_y``), ``"ce"`` or a
            callable ``(logits, y) -> (B,)``; larger = more adversarial.
        target: ``(B,)`` classes to reach (targeted losses, success ``pred == target``);
            ``None`` (default) leaves the class ``y``.
        generator: all randomness (start, windows, signs): a ``torch.Generator`` or
            :class:`~advlab.streams.PointStreams` (one stream per sample); same seed -> identical result.
        return_info: return an :class:`~advlab.attacks.result.AttackResult` whose ``queries``
            count the forward passes per sample (the clean one included).

    Returns:
        ``x_adv`` ``(B, ...)`` inside the threat model: a fooling point where one was found,
        else the point of highest loss (``x`` itself for samples already misclassified).
    """
    if threat.norm not in ("linf", "l2", "l1"):
        raise ValueError(f"square supports the linf, l2 and l1 threat models, got {threat.norm!r}")
    check_int("queries", queries)
    check_int("restarts", restarts)
    if not 0.0 < float(p_init) <= 1.0:
        raise ValueError(f"p_init must lie in (0, 1], got {p_init!r}")
    targeted = target is not None
    loss_fn = get_loss(loss, targeted=targeted)
    goal = y if target is None else target  # the labels the loss and the success test take
    image = _as_image(x)  # (B, C, H, W) view
    count = PassCount(x, return_info)
    with model_guard(model), torch.no_grad():
        clean_logits = prepare(model, x, y, threat, target=target)
        count.add()
        eps = threat.eps_per_sample(x)  # (B,)
        best = BestIterate.start(image, loss_fn(clean_logits, goal), reached(clean_logits, goal, targeted=targeted))

        for _ in range(restarts):
            index = best.remaining()
            if index.numel() == 0:
                break

            def query(rows: Tensor | None, images: Tensor, index: Tensor = index) -> Tensor:
                if count.counts is not None:
                    count.add(index if rows is None else index[rows])
                return model(images.reshape(images.shape[0], *x.shape[1:]))

            run = _random_search(query, image[index], goal[index], eps[index], threat.norm,
                                 threat.bounds, loss_fn, targeted, queries, p_init,
                                 streams.for_rows(generator, index))
            best.update(index, run.x, run.score, run.success)
        x_adv = finalize(x, best.x.reshape(x.shape), threat)
        if not return_info:
            return x_adv
        return bounded_result(model, x, y, x_adv, threat, target=target, queries=count.counts)


__all__ = ["l2_block", "p_schedule", "square"]
