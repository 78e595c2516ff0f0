"""The first-stage indexes of library search: NumPy (default) and Qdrant (in-process local mode) give the
brute-force answer (each video's best clip cosine), restricted to ``among``, and forget removed videos."""

from __future__ import annotations

import numpy as np
import pytest

from service.store.vectors import NumpyIndex, QdrantIndex, VectorIndex


def _unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture()
def library() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {f"v{i:02d}": _unit(rng.normal(size=(2 + i % 5, 16))) for i in range(30)}


def brute_force(library: dict[str, np.ndarray], query: np.ndarray, n: int, among=None) -> list[str]:
    scores = {v: float((m @ query).max()) for v, m in library.items() if among is None or v in among}
    return sorted(scores, key=lambda v: -scores[v])[:n]


@pytest.mark.parametrize("make", [NumpyIndex, lambda: QdrantIndex(":memory:", "test", 16)], ids=["numpy", "qdrant"])
def test_index_gives_the_brute_force_answer(make, library) -> None:
    index: VectorIndex = make()
    for video_id, vectors in library.items():
        index.add(video_id, vectors)
    assert index.ids() == set(library)
    query = _unit(np.random.default_rng(4).normal(size=16))
    got = index.search(query, 5)
    assert [v for v, _ in got] == brute_force(library, query, 5)
    assert [s for _, s in got] == pytest.approx([float((library[v] @ query).max()) for v, _ in got], abs=1e-5)
    among = {"v01", "v07", "v13", "v22"}
    assert [v for v, _ in index.search(query, 3, among)] == brute_force(library, query, 3, among)
    first = got[0][0]
    index.remove(first)
    assert first not in index.ids() and first not in [v for v, _ in index.search(query, 5)]
    index.add("v01", library["v02"])  # replaced, not added to
    assert len(index.ids()) == len(library) - 1
    with pytest.raises(ValueError):
        index.add("bad", np.zeros((0, 16), np.float32))
