"""Solves and inverses of symmetric positive-definite systems by Cholesky factorisation.

The probes' Newton Hessians and preconditioners are symmetric positive definite (a Gram matrix plus
a ridge), so Cholesky is the natural factorisation, and it avoids the LU path of
``torch.linalg.solve`` / ``torch.linalg.inv``: in torch 2.13's CPU build (oneMKL) that path fails
once a process has called ``torch.set_num_threads`` with two or more threads ("Pivots given to
lu_solve must all be greater or equal to 1", oneMKL: "Parameter 6 was incorrect on entry to
DLASWP"), on float64 systems a few hundred wide, batched or not.
"""

from __future__ import annotations

import torch


def solve_spd(matrix: torch.Tensor, rhs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``matrix^-1 rhs`` per batch element, with whether each factorisation succeeded.

    Args:
        matrix: [..., n, n] symmetric matrices (only the lower triangle is read).
        rhs: [..., n] right-hand sides.

    Returns:
        ``(solution [..., n], solved [...] bool)``; where ``solved`` is false (the matrix is not
        positive definite to working precision) the solution is meaningless and must be replaced.
    """
    factor, info = torch.linalg.cholesky_ex(matrix)
    solution = torch.cholesky_solve(rhs.unsqueeze(-1), factor).squeeze(-1)
    return solution, (info == 0) & torch.isfinite(solution).all(dim=-1)


def invert_spd(matrix: torch.Tensor) -> torch.Tensor:
    """The inverse of a symmetric positive-definite ``[..., n, n]`` matrix.

    Raises:
        torch.linalg.LinAlgError: the matrix is not positive definite.
    """
    return torch.cholesky_inverse(torch.linalg.cholesky(matrix))
