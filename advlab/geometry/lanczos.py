"""Eigenvalues of input Hessians: batched Lanczos, power iteration with deflation, dense spectra.

* :func:`lanczos`: the Lanczos iteration (Lanczos 1950) with full reorthogonalisation
  (classical Gram-Schmidt applied twice), batched over samples. ``m`` matvecs build an
  orthonormal Krylov basis ``Q`` and a tridiagonal ``T = Q^T H Q``; the extreme eigenvalues of
  ``T`` (Ritz values) converge to those of ``H`` much faster than power iteration converges to
  even the first one (Golub & Van Loan, "Matrix Computations", ch. 10).
* :func:`power_iteration_deflation`: PyHessian's method (Yao, Gholami, Keutzer & Mahoney 2020):
  power iteration for one eigenpair at a time, orthogonalising against the ones already found;
  kept as the baseline of ``benchmarks/geometry.py``.
* :func:`hessian_eigs` / :func:`hessian_spectrum`: the input-Hessian of a model's loss,
  top-``k`` by Lanczos or every eigenvalue through the dense Hessian (small inputs only).

A ``matvec`` maps ``(B, D)`` to ``(B, D)``: row ``i`` is ``H_i v_i``
(:class:`~advlab.geometry.hessian.HessianOperator` is one and counts its calls). The iterations
run in float64 whatever the matvec's precision.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from advlab.attacks.losses import LossFn
from advlab.geometry._common import Randomness, random_normal
from advlab.geometry.hessian import HessianOperator, dense_hessian
from advlab.streams import PointStreams
from advlab.threat import flat

Matvec = Callable[[Tensor], Tensor]
_WHICH = ("LM", "LA")


def default_steps(dim: int, k: int) -> int:
    """Lanczos steps used when none are given: ``max(5k, k + 40)``, at most ``dim``.

    The accuracy this buys on a flat, two-sided spectrum (a Fashion-MNIST ``small_cnn`` with
    Softplus activations) is measured in ``benchmarks/geometry.py`` (see benchmarks/README.md).
    """
    return min(dim, max(5 * k, k + 40))


#: The old name of :func:`default_steps`, kept for one release.
default_iterations = default_steps


def _check_k(k: int, dim: int, which: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= dim:
        raise ValueError(f"k must be an int in [1, {dim}] (the dimension), got {k!r}")
    if which not in _WHICH:
        raise ValueError(f"which must be 'LM' (largest magnitude) or 'LA' (largest algebraic), got {which!r}")


def _orthogonalise(w: Tensor, basis: Tensor) -> Tensor:
    """Remove from each row of ``w`` ``(B, D)`` its components along ``basis`` ``(B, j, D)``, twice."""
    for _ in range(2):  # elementwise products: small batched matmuls are slow on busy CPUs
        coefficients = (basis * w[:, None, :]).sum(dim=2)  # (B, j)
        w = w - (basis * coefficients[:, :, None]).sum(dim=1)
    return w


def _select(values: Tensor, k: int, which: str) -> Tensor:
    """Indices ``(B, k)`` of the top-``k`` values per row, by magnitude or algebraically."""
    key = values.abs() if which == "LM" else values
    return key.argsort(dim=1, descending=True)[:, :k]


def lanczos(matvec: Matvec, dim: int, k: int, steps: int | None = None, *,
            batch_size: int = 1, which: str = "LM", generator: Randomness = None,
            device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Top-``k`` eigenpairs of ``batch_size`` symmetric ``D x D`` operators, by Lanczos.

    Args:
        matvec: ``(B, D) -> (B, D)``, row ``i`` multiplied by the ``i``-th symmetric matrix.
        dim: ``D``. ``k``: eigenpairs wanted (``1 <= k <= D``).
        steps: Lanczos steps = matvecs (default :func:`default_steps`; at most ``D``).
            With ``steps == D`` the result is exact up to round-off.
        batch_size: ``B``, the number of operators handled together.
        which: ``"LM"``: largest magnitude (sorted by ``|lambda|`` descending);
            ``"LA"``: largest algebraic (sorted descending).
        generator: draws the random start vector (and restart vectors); with
            :class:`~advlab.streams.PointStreams` (one per operator) each operator's
            start and restarts come from its own stream, a restart only for the operators that
            need one, so an operator's result does not depend on the others in the batch.
        device: where the vectors live (the generator's device by default).

    Returns:
        ``(eigenvalues (B, k), eigenvectors (B, k, D))``, float64, eigenvectors of unit norm.

    When the Krylov space is exhausted (an invariant subspace is found, as for the low-rank
    Hessian of a ReLU network's cross-entropy), the iteration restarts with a random vector
    orthogonal to the basis and a zero coupling in ``T``, which is exact.
    """
    _check_k(k, dim, which)
    count = min(dim, default_steps(dim, k) if steps is None else steps)
    if count < k:
        raise ValueError(f"steps ({steps}) must be at least k ({k})")
    device = device if device is not None else (generator.device if generator is not None else "cpu")
    basis = torch.zeros(batch_size, count, dim, dtype=torch.float64, device=device)  # Q^T
    alpha = torch.zeros(batch_size, count, dtype=torch.float64, device=device)
    beta = torch.zeros(batch_size, max(count - 1, 0), dtype=torch.float64, device=device)
    q = _unit_rows(random_normal((batch_size, dim), generator=generator, device=device,
                                 dtype=torch.float64))
    tolerance = dim * torch.finfo(torch.float64).eps
    scale = torch.zeros(batch_size, dtype=torch.float64, device=device)
    for j in range(count):
        basis[:, j] = q
        w = matvec(q).to(device=device, dtype=torch.float64)  # (B, D)
        alpha[:, j] = (w * q).sum(dim=1)
        if j == count - 1:
            break
        w = _orthogonalise(w, basis[:, :j + 1])
        norm = w.norm(dim=1)  # (B,)
        scale = torch.maximum(scale, torch.maximum(alpha[:, j].abs(), norm))
        broken = norm <= tolerance * scale.clamp_min(1e-300)
        if bool(broken.any()):  # invariant subspace: restart orthogonally, decouple
            restart = _restart_draw(generator, broken, (batch_size, dim), device)
            restart = _unit_rows(_orthogonalise(restart, basis[:, :j + 1]))
            w = torch.where(broken[:, None], restart, w / norm.clamp_min(1e-300)[:, None])
            norm = torch.where(broken, torch.zeros_like(norm), norm)
        else:
            w = w / norm[:, None]
        beta[:, j] = norm
        q = w
    tridiagonal = torch.diag_embed(alpha) + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    ritz_values, ritz_vectors = torch.linalg.eigh(tridiagonal)  # (B, m), (B, m, m)
    index = _select(ritz_values, k, which)  # (B, k)
    values = ritz_values.gather(1, index)
    coefficients = ritz_vectors.gather(2, index[:, None, :].expand(-1, count, -1))  # (B, m, k)
    vectors = torch.matmul(coefficients.transpose(1, 2), basis)  # (B, k, D)
    return values, _unit_rows(vectors.reshape(-1, dim)).reshape(batch_size, k, dim)


def _restart_draw(generator: Randomness, broken: Tensor, shape: tuple[int, int],
                  device: torch.device | str) -> Tensor:
    """Random restart vectors ``(B, D)``: every row from a generator (as always), or with
    per-point streams only the ``broken`` rows (the others are zero and unused)."""
    if isinstance(generator, PointStreams):
        return generator.normal(shape, dtype=torch.float64, rows=broken).to(device)
    return random_normal(shape, generator=generator, device=device, dtype=torch.float64)


def _unit_rows(t: Tensor) -> Tensor:
    return t / t.norm(dim=-1, keepdim=True).clamp_min(1e-300)


def power_iteration_deflation(matvec: Matvec, dim: int, k: int, *, batch_size: int = 1,
                              steps: int = 100, tol: float = 1e-3,
                              generator: torch.Generator | None = None,
                              device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Top-``k`` eigenpairs by magnitude with power iteration and deflation (PyHessian's method).

    As in PyHessian (Yao et al. 2020): for each eigenpair start from a random vector, orthogonalise
    against the eigenvectors already found, multiply, normalise; stop when the Rayleigh quotient
    changes by less than ``tol`` relative (``|new - old| / (|old| + 1e-6)``) or after
    ``steps`` matvecs. Samples that have converged stop moving; the matvec is called until all
    have, so the number of calls (count them on the matvec) is that of the slowest sample.

    Returns:
        ``(eigenvalues (B, k), eigenvectors (B, k, D))`` float64, sorted by ``|lambda|`` descending.
    """
    _check_k(k, dim, "LM")
    device = device if device is not None else (generator.device if generator is not None else "cpu")
    found_values = torch.zeros(batch_size, k, dtype=torch.float64, device=device)
    found_vectors = torch.zeros(batch_size, k, dim, dtype=torch.float64, device=device)
    for i in range(k):
        v = _unit_rows(random_normal((batch_size, dim), generator=generator, device=device,
                                     dtype=torch.float64))
        value = torch.full((batch_size,), float("nan"), dtype=torch.float64, device=device)
        active = torch.ones(batch_size, dtype=torch.bool, device=device)
        for _ in range(steps):
            v = _unit_rows(_orthogonalise(v, found_vectors[:, :i]))
            product = matvec(v).to(device=device, dtype=torch.float64)  # (B, D)
            rayleigh = (product * v).sum(dim=1)
            converged = (rayleigh - value).abs() / (value.abs() + 1e-6) < tol
            value = torch.where(active, rayleigh, value)
            v = torch.where(active[:, None], _unit_rows(product), v)
            active &= ~converged
            if not bool(active.any()):
                break
        found_values[:, i] = value
        found_vectors[:, i] = _unit_rows(_orthogonalise(v, found_vectors[:, :i]))
    order = found_values.abs().argsort(dim=1, descending=True)
    return found_values.gather(1, order), found_vectors.gather(1, order[:, :, None].expand(-1, -1, dim))


def hessian_eigs(model: nn.Module, x: Tensor, y: Tensor | None = None, k: int = 20, *,
                 steps: int | None = None, loss: str | LossFn = "ce", which: str = "LM",
                 generator: Randomness = None) -> tuple[Tensor, Tensor]:
    """Top-``k`` eigenpairs of each sample's input Hessian of the loss, by batched Lanczos.

    Args:
        model: classifier returning logits; ``x``: ``(B, ...)``; ``y``: ``(B,)`` or ``None``
            (predicted labels); ``loss``: per-sample loss (cross-entropy by default).
        k, steps, which, generator: as in :func:`lanczos` (``steps`` HVPs per sample).

    Returns:
        ``(eigenvalues (B, k), eigenvectors (B, k, *x.shape[1:]))`` in ``x``'s dtype.
    """
    operator = HessianOperator(model, x, y, loss)
    values, vectors = lanczos(operator, operator.dim, k, steps, batch_size=x.shape[0],
                              which=which, generator=generator, device=x.device)
    return values.to(x.dtype), vectors.to(x.dtype).reshape(x.shape[0], k, *x.shape[1:])


def hessian_spectrum(model: nn.Module, x: Tensor, y: Tensor | None = None, *,
                     loss: str | LossFn = "ce", max_dim: int = 1024, batch_size: int = 256) -> Tensor:
    """Every eigenvalue of each sample's input Hessian, descending: ``(B, D)``.

    Builds the dense Hessian (``D`` HVPs per sample, :func:`dense_hessian`) and calls
    ``torch.linalg.eigvalsh`` in float64. Only for ``D <= max_dim`` (digits 64, 28x28 images
    784); for larger inputs use :func:`hessian_eigs`.
    """
    dim = flat(x).shape[1]
    if dim > max_dim:
        raise ValueError(f"the input has {dim} dimensions, more than max_dim={max_dim} for a dense "
                         "Hessian; use hessian_eigs(model, x, y, k=...) for the top eigenvalues")
    hessian = dense_hessian(model, x, y, loss=loss, batch_size=batch_size)  # (B, D, D)
    return torch.linalg.eigvalsh(hessian.double()).flip(dims=(1,)).to(x.dtype)
