"""Negatives for the triplet loss: a memory bank of student embeddings, its search index, and miners.

The pieces compose through constructors and are testable alone (as in pytorch-metric-learning):

- ``MemoryBank``: a ring buffer of the most recent student embeddings of occluded faces and their
  labels (class ids, or ages). Entries are detached: a negative from the bank pushes the anchor away
  without a gradient through the negative (as in cross-batch memory, Wang et al. 2020).
- ``BankIndex``: nearest-neighbour search over the bank. ``flat`` (FAISS's exact ``IndexFlatL2``, updated in
  place as the ring buffer turns); ``ivf`` (``IndexIVFFlat``, approximate, trained once the bank is first
  full, searched exactly until then) for very large banks; ``exact`` (``torch.cdist``, no faiss needed:
  the same neighbours as ``flat`` up to floating-point ties, since the two sum distances in another
  order); ``auto``, the default: ``ivf`` above 50k entries, else ``flat``, or ``exact`` where faiss is not
  installed. On CUDA, with a faiss built with GPU support, the flat index runs on the GPU.
- Miners (plugins of kind ``miners``): ``hard`` (the closest valid negative), ``semi-hard`` (the closest
  valid negative farther than the positive), ``random`` (any valid negative). A negative is *valid* when
  its class differs from the anchor's, or, for age, when its age differs by at least ``age_gap`` years.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from ..optional import has_faiss, require_faiss

IVF_ABOVE = 50_000
INDEX_KINDS = ("auto", "flat", "ivf", "exact")
EMPTY = 1e4  # the coordinate of empty bank slots  # "auto" switches to the approximate index above this many entries


class MemoryBank:
    """The ``capacity`` most recent embeddings (float32, detached) with their labels, as a ring buffer."""

    def __init__(self, capacity: int, dim: int):
        if capacity < 1:
            raise UsageError(f"the memory bank needs a capacity of at least 1, not {capacity}")
        self.capacity, self.dim = int(capacity), int(dim)
        # empty slots sit far from everything, so a search over the whole buffer never ranks them first
        self.embeddings = np.full((self.capacity, self.dim), EMPTY, dtype=np.float32)
        self.labels = np.zeros(self.capacity, dtype=np.float32)
        self.size = 0  # entries filled
        self.cursor = 0  # next slot to write

    def add(self, embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Store a batch (oldest entries make room); returns the slots written."""
        n = len(embeddings)
        if n > self.capacity:
            embeddings, labels, n = embeddings[-self.capacity:], labels[-self.capacity:], self.capacity
        slots = (self.cursor + np.arange(n)) % self.capacity
        self.embeddings[slots] = embeddings
        self.labels[slots] = labels
        self.cursor = int((self.cursor + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)
        return slots


class BankIndex:
    """Search over a ``MemoryBank`` (FAISS, or torch for ``exact``), kept in step with it (``update`` after
    each ``bank.add``)."""

    def __init__(self, bank: MemoryBank, kind: str = "auto", nprobe: int = 16, use_gpu: bool = False,
                 seed: int = 0):
        if kind not in INDEX_KINDS:
            raise UsageError(f"index must be {', '.join(INDEX_KINDS[:-1])} or {INDEX_KINDS[-1]}, not {kind!r}")
        if kind == "auto":  # flat and exact find the same neighbours: faiss is needed only for ivf
            kind = "ivf" if bank.capacity > IVF_ABOVE else "flat" if has_faiss() else "exact"
        self.faiss = require_faiss() if kind != "exact" else None
        self.bank = bank
        self.kind = kind
        self.nprobe = nprobe
        self.seed = seed  # draws the sample the ivf lists are trained on
        self.index: Any = None
        self._view: np.ndarray | None = None
        self._gpu = use_gpu and hasattr(self.faiss, "StandardGpuResources") and self.faiss.get_num_gpus() > 0

    def _build_flat(self) -> None:
        faiss = self.faiss
        if self._gpu:
            self._res = faiss.StandardGpuResources()
            self.index = faiss.GpuIndexFlatL2(self._res, self.bank.dim)
            self._dirty = True
            return
        self.index = faiss.IndexFlatL2(self.bank.dim)
        self.index.add(self.bank.embeddings)  # every slot: empty ones are masked out by the miners
        # a writable view of the index's own storage: ring-buffer writes cost O(batch), not a rebuild
        self._view = faiss.rev_swig_ptr(self.index.get_xb(), self.bank.capacity * self.bank.dim).reshape(
            self.bank.capacity, self.bank.dim)

    def _build_ivf(self) -> None:
        faiss = self.faiss
        n = self.bank.size
        # about 4 sqrt(n) lists (faiss's rule of thumb), at most 1024, with >= 39 training points each
        nlist = max(1, min(int(4 * math.sqrt(n)), 1024, n // 39))
        quantizer = faiss.IndexFlatL2(self.bank.dim)
        index = faiss.IndexIVFFlat(quantizer, self.bank.dim, nlist)
        sample = self.bank.embeddings[:n]
        if n > 40 * nlist:  # k-means on a sample: the centroids need not see every entry
            sample = sample[np.random.default_rng(self.seed).choice(n, 40 * nlist, replace=False)]
        index.train(sample)
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
        index.add_with_ids(self.bank.embeddings[:n], np.arange(n, dtype=np.int64))
        index.nprobe = self.nprobe
        self.index = index

    def update(self, slots: np.ndarray) -> None:
        """Reflect the bank's newest writes (its ``add`` return value) in the index."""
        if self.kind == "exact":  # searches the bank itself
            return
        if self.kind == "flat":
            if self.index is None:
                self._build_flat()
            if self._gpu:
                self._dirty = True  # the GPU copy is refreshed at the next search
            else:
                self._view[slots] = self.bank.embeddings[slots]
            return
        if self.index is None:
            if self.bank.size == self.bank.capacity:  # train the lists on the full bank, exact search before
                self._build_ivf()
            return
        ids = np.asarray(slots, dtype=np.int64)
        self.index.remove_ids(ids)
        self.index.add_with_ids(self.bank.embeddings[slots], ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Squared L2 distances and bank slots of the ``k`` nearest entries (-1 where fewer exist)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.index is None:  # nothing stored yet, or an ivf bank still too small to train: exact search
            return exact_search(self.bank.embeddings[:self.bank.size], queries, k)
        if self._gpu and self._dirty:
            self.index.reset()
            self.index.add(self.bank.embeddings)
            self._dirty = False
        return self.index.search(queries, min(k, self.bank.capacity))


def exact_search(bank: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The same search with ``torch.cdist`` (the reference FAISS is checked and benchmarked against)."""
    if len(bank) == 0:
        return np.full((len(queries), k), np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
    d = torch.cdist(torch.from_numpy(np.ascontiguousarray(queries)), torch.from_numpy(np.ascontiguousarray(bank)))
    k_eff = min(k, len(bank))
    dist, idx = torch.topk(d, k_eff, dim=1, largest=False)
    out_d = np.full((len(queries), k), np.inf, np.float32)
    out_i = np.full((len(queries), k), -1, np.int64)
    out_d[:, :k_eff], out_i[:, :k_eff] = dist.numpy() ** 2, idx.numpy()
    return out_d, out_i


def valid_negatives(anchor_labels: np.ndarray, labels: np.ndarray, regression: bool, age_gap: float) -> np.ndarray:
    """Boolean (B, K): which candidate labels make a negative for each anchor."""
    a = np.asarray(anchor_labels, dtype=np.float32)[:, None]
    if regression:
        return np.abs(labels - a) >= age_gap
    return labels != a


def _take(slots: np.ndarray, ok: np.ndarray, column: np.ndarray) -> np.ndarray:
    """Per anchor, the slot in the chosen candidate column, or -1 where that candidate is not valid."""
    rows = np.arange(len(ok))
    return np.where(ok[rows, column], slots[rows, column], -1)


class Miner:
    """Base class of miner plugins: pick one negative slot per anchor (-1 when none is valid)."""

    #: how many nearest neighbours to look through for a valid negative before giving up on an anchor
    candidates = 64

    def __init__(self, regression: bool = False, age_gap: float = 10.0, seed: int = 0):
        if age_gap <= 0:
            raise UsageError(f"age_gap must be positive (years), not {age_gap}")
        self.regression, self.age_gap = regression, float(age_gap)
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart ``self.rng``, the stream every random choice of a miner draws from, at ``seed`` (>= 0).

        The triplet distiller calls it with the run's seed at the start of each stage, so runs of other
        seeds mine other negatives and a rerun of one seed mines the same.
        """
        self.rng = np.random.default_rng(seed)

    def mine(self, anchors: np.ndarray, anchor_labels: np.ndarray, positive_dist: np.ndarray, bank: MemoryBank,
             index: BankIndex | None) -> np.ndarray:
        """One bank slot per anchor, or -1 where none is valid (always -1 while the bank is empty)."""
        if bank.size == 0:
            return np.full(len(anchors), -1, np.int64)
        return self.pick(anchors, anchor_labels, positive_dist, bank, index)

    def pick(self, anchors: np.ndarray, anchor_labels: np.ndarray, positive_dist: np.ndarray, bank: MemoryBank,
             index: BankIndex | None) -> np.ndarray:
        """What a miner plugin writes: ``mine`` for a bank that holds at least one entry."""
        raise NotImplementedError

    def _neighbours(self, anchors, anchor_labels, bank, index) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The nearest candidates and which are valid; the search widens (8x at a time, up to the whole
        bank) while some anchor has no valid candidate among them."""
        k = min(self.candidates, bank.size) if bank.size else 1
        while True:
            if index is not None:
                dist, slots = index.search(anchors, k)
            else:
                dist, slots = exact_search(bank.embeddings[:bank.size], anchors, k)
            filled = (slots >= 0) & (slots < bank.size)
            labels = bank.labels[np.clip(slots, 0, bank.capacity - 1)]
            ok = filled & valid_negatives(anchor_labels, labels, self.regression, self.age_gap)
            if ok.any(axis=1).all() or k >= bank.capacity:
                return dist, slots, ok
            k = min(k * 8, bank.capacity)


class HardMiner(Miner):
    """The closest valid negative (the hardest): what the paper mines with FAISS."""

    def pick(self, anchors, anchor_labels, positive_dist, bank, index):
        _, slots, ok = self._neighbours(anchors, anchor_labels, bank, index)
        return _take(slots, ok, ok.argmax(axis=1))


class SemiHardMiner(Miner):
    """The closest valid negative farther than the positive (FaceNet's semi-hard); else the hardest."""

    def pick(self, anchors, anchor_labels, positive_dist, bank, index):
        dist, slots, ok = self._neighbours(anchors, anchor_labels, bank, index)
        semi = ok & (np.sqrt(np.maximum(dist, 0)) > np.asarray(positive_dist)[:, None])
        return _take(slots, ok, np.where(semi.any(axis=1), semi.argmax(axis=1), ok.argmax(axis=1)))


class RandomMiner(Miner):
    """Any valid negative, uniformly (a baseline for the mining strategies)."""

    tries = 32

    def pick(self, anchors, anchor_labels, positive_dist, bank, index):
        out = np.full(len(anchors), -1, np.int64)
        cand = self.rng.integers(0, bank.size, size=(len(anchors), self.tries))
        ok = valid_negatives(anchor_labels, bank.labels[cand], self.regression, self.age_gap)
        first = ok.argmax(axis=1)
        found = ok[np.arange(len(ok)), first]
        out[found] = cand[np.arange(len(ok)), first][found]
        return out
