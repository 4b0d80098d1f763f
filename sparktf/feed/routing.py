"""Which training node gets which rows of a partition, when the partition sizes are known
(pure logic).

Without the sizes (an epoch's first feed), every chunk of every partition is cut
into one slice per node (:func:`sparktf.feed.sender._split`): each feeding task
talks to all N nodes and each message carries 1/N of a chunk, which stops
scaling at about a hundred nodes (README, *Scale*).  Once one epoch has told
the driver every partition's size, the partitions can be laid end to end and
cut into N equal segments: node k takes the global rows ``[k*T//N, (k+1)*T//N)``
of the T rows.  A partition then goes whole to one node, or to two (three...)
where a segment boundary falls inside it, messages carry whole chunks, and the
nodes' counts differ by at most one row, so the epoch agreement holds as before.
"""

from __future__ import annotations

#: The values of ``train(..., split=...)``.
SPLITS = ("auto", "all", "segments")
#: ``train(..., split="auto")`` routes by segments from the second epoch on when there
#: are more training nodes than this, whatever the data ...
AUTO_SEGMENTS_ABOVE = 8
#: ... or than this when the data is cached (its partitions keep their sizes from one epoch
#: to the next).  At 2 nodes the two splits feed at the same rate; at 3, 4 and 8, segments
#: fed 1.04-1.45x faster (README, *Scale*).
AUTO_SEGMENTS_CACHED_ABOVE = 2


def segments(sizes: list[int], nodes: int) -> list[list[tuple[int, int, int]]]:
    """For each partition, its ``(node, start, stop)`` row ranges (in partition order,
    non-empty, covering the partition), the partitions cut into ``nodes`` equal segments."""
    if nodes < 1:
        raise ValueError(f"segments need at least one node, not {nodes}")
    total = sum(sizes)
    out: list[list[tuple[int, int, int]]] = []
    offset = 0
    for size in sizes:
        ranges = []
        row = offset
        while row < offset + size:
            # the segment holding global row `row`: the first k with (k+1)*total//nodes > row
            node = ((row + 1) * nodes + total - 1) // total - 1
            end = min(offset + size, (node + 1) * total // nodes)
            ranges.append((node, row - offset, end - offset))
            row = end
        out.append(ranges)
        offset += size
    return out


def use_segments(split: str, nodes: int, sizes_known: bool, cached: bool = False) -> bool:
    """Whether an epoch is routed by :func:`segments` (``split``: ``"all"``, ``"segments"``
    or ``"auto"``; ``cached``: the fed RDD or DataFrame is persisted); never before one
    epoch has given the partition sizes."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if not sizes_known:
        return False
    above = AUTO_SEGMENTS_CACHED_ABOVE if cached else AUTO_SEGMENTS_ABOVE
    return split == "segments" or (split == "auto" and nodes > above)


def pieces(ranges: list[tuple[int, int, int]], start: int, stop: int
           ) -> list[tuple[int, int, int]]:
    """The ``(node, start, stop)`` parts of a partition's ``ranges`` that fall within its
    rows ``[start, stop)`` (one chunk)."""
    return [(node, max(a, start), min(b, stop)) for node, a, b in ranges if a < stop and b > start]
