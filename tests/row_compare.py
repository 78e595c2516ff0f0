"""Compare post-processed ``[start, end, score]`` rows with the official output.

The official post-processing ends with torch's unstable sort, so rows with equal scores (in practice the
suppressed rows with score 0, and NaN rows from linear NMS) may come out in any order; everything else is
deterministic. `assert_rows_match` therefore checks:

* same number of rows, NaN scores at the same positions, other scores equal position by position;
* for each run of rows whose *expected* scores are exactly equal (a NaN run counts as one run), the windows
  ``(start, end)`` of that run match as a multiset; a run of one row is simply compared in place.
"""

from __future__ import annotations

import numpy as np
import torch


def _as_rows(rows, name: str) -> np.ndarray:
    if isinstance(rows, torch.Tensor):
        rows = rows.detach().cpu().to(torch.float64).numpy()
    array = np.asarray(rows, dtype=np.float64)
    if array.size == 0:
        array = array.reshape(0, 3)
    assert array.ndim == 2 and array.shape[1] == 3, f"{name} rows must be (N, 3), got {array.shape}"
    return array


def _equal_score_runs(scores: np.ndarray) -> list[tuple[int, int]]:
    runs, start = [], 0
    for i in range(1, len(scores) + 1):
        if i == len(scores) or not (scores[i] == scores[start] or (np.isnan(scores[i]) and np.isnan(scores[start]))):
            runs.append((start, i))
            start = i
    return runs


def _windows_match_as_multiset(actual: np.ndarray, expected: np.ndarray, atol: float) -> bool:
    """Whether a perfect matching exists between the rows within ``atol`` of each other.

    A matching (not a sort-and-compare) so that near-equal windows that sort differently still pair up.
    """
    close = np.abs(expected[:, None, :] - actual[None, :, :]).max(axis=2) <= atol
    owner = [-1] * len(actual)  # owner[j] = expected row currently paired with actual row j

    def place(i: int, seen: set[int]) -> bool:  # augmenting path search (Kuhn's algorithm)
        for j in np.flatnonzero(close[i]).tolist():
            if j not in seen:
                seen.add(j)
                if owner[j] < 0 or place(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return all(place(i, set()) for i in range(len(expected)))


def assert_rows_match(actual, expected, atol: float = 1e-4, score_atol: float | None = None) -> None:
    """Assert that post-processed rows equal the expected ones (see the module docstring for the rules).

    ``atol`` bounds start/end differences in seconds; ``score_atol`` bounds score differences (default: atol).
    """
    got = _as_rows(actual, "actual")
    want = _as_rows(expected, "expected")
    score_atol = atol if score_atol is None else score_atol
    assert got.shape == want.shape, f"{got.shape[0]} rows, expected {want.shape[0]}"

    got_nan, want_nan = np.isnan(got[:, 2]), np.isnan(want[:, 2])
    assert np.array_equal(got_nan, want_nan), (
        f"NaN scores at rows {np.flatnonzero(got_nan).tolist()}, expected {np.flatnonzero(want_nan).tolist()}"
    )
    score_diff = np.abs(got[~want_nan, 2] - want[~want_nan, 2])
    if score_diff.size:
        worst = int(np.argmax(score_diff))
        assert score_diff[worst] <= score_atol, (
            f"scores differ by up to {score_diff[worst]:.3g} (row {np.flatnonzero(~want_nan)[worst]}): "
            f"got {got[:, 2].tolist()}, expected {want[:, 2].tolist()}"
        )

    for start, stop in _equal_score_runs(want[:, 2]):
        got_win, want_win = got[start:stop, :2], want[start:stop, :2]
        if stop - start == 1:
            assert np.abs(got_win - want_win).max() <= atol, (
                f"row {start}: got {got[start].tolist()}, expected {want[start].tolist()}"
            )
        else:
            assert _windows_match_as_multiset(got_win, want_win, atol), (
                f"rows {start}..{stop - 1} (equal score {want[start, 2]}) differ as a multiset: "
                f"got {got_win.tolist()}, expected {want_win.tolist()}"
            )
