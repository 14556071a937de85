#!/usr/bin/env python3
"""Call stacks of a `bench/profile.sh` recording, with Halley's frames named.

`bench/profile.sh` prints self time only: this VM's perf cannot read the
symbol table of Halley's binary, and without frame pointers the stacks
stop at the first Rust frame. With a build that keeps frame pointers, the
stacks are whole; this script names the binary's frames with `nm` (as
profile.sh does for self time) and prints either

  - the inclusive share of the top frames (what a call and everything
    under it costs), or
  - for the samples whose leaf matches a pattern, who called it.

    RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR=/tmp/fp \\
        cargo build --release -p halley
    BIN=/tmp/fp/release/halley TRANSPORT=long-polling USERS=10000 INTERVAL=100 bench/profile.sh
    d=bench/results/profile-<time>
    perf script -i $d/perf.data --show-mmap-events -F comm,tid,ip,sym,dso > $d/script.txt
    bench/callgraph.py $d                      # inclusive top 60 (TOP=200 for more)
    bench/callgraph.py $d memmove 3            # memmove's callers, 3 frames up
"""

import bisect
import collections
import os
import re
import sys

MMAP = re.compile(r"PERF_RECORD_MMAP2? \d+/\d+: \[0x([0-9a-f]+)\((0x[0-9a-f]+)\) @ (0x[0-9a-f]+|\d+).*?(\S+)$")
FRAME = re.compile(r"\s+([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$")


def load(directory):
    """The binary's symbols (sorted addresses, names) and LOAD segments, as profile.sh wrote them."""
    segments = [tuple(int(v, 16) for v in raw.split())
                for raw in open(os.path.join(directory, "segments.txt")) if raw.strip()]
    symbols = []
    for raw in open(os.path.join(directory, "symbols.txt")):
        parts = raw.rstrip("\n").split(" ", 2)
        if len(parts) == 3:
            symbols.append((int(parts[0], 16), parts[2]))
    symbols.sort()
    return segments, [a for a, _ in symbols], [n for _, n in symbols]


def samples(directory, binary):
    """Each sample's frames, leaf first, the binary's addresses named."""
    segments, addrs, names = load(directory)
    maps = []  # where the binary was mapped: (start, end, file offset)

    def name(ip, sym, dso):
        if not dso.endswith(binary) or not (sym == "[unknown]" or sym.startswith("0x")):
            return sym
        offset = next((ip - start + pgoff for start, end, pgoff in maps if start <= ip < end), ip)
        vaddr = next((offset - off + addr for off, addr, size in segments if off <= offset < off + size), offset)
        i = bisect.bisect_right(addrs, vaddr) - 1
        return names[i] if i >= 0 else hex(ip)

    frames = []
    for line in open(os.path.join(directory, "script.txt"), errors="replace"):
        if "PERF_RECORD_MMAP" in line:
            m = MMAP.search(line)
            if m and m.group(4).endswith(binary):
                pgoff = m.group(3)
                maps.append((int(m.group(1), 16), int(m.group(1), 16) + int(m.group(2), 16),
                             int(pgoff, 16) if pgoff.startswith("0x") else int(pgoff)))
            continue
        if line[:1] not in ("\t", " "):
            if line.strip():
                if frames:
                    yield frames
                frames = []
            continue
        m = FRAME.match(line)
        if m:
            sym = re.sub(r"\+0x[0-9a-f]+$", "", m.group(2))
            frames.append(name(int(m.group(1), 16), sym, m.group(3)))
    if frames:
        yield frames


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    directory = sys.argv[1]
    binary = os.environ.get("BINARY", "halley")
    if len(sys.argv) >= 3:
        leaf, depth = re.compile(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 3
        chains, total, matched = collections.Counter(), 0, 0
        for frames in samples(directory, binary):
            total += 1
            if leaf.search(frames[0]):
                matched += 1
                chains[" <- ".join(f[:110] for f in frames[1:1 + depth])] += 1
        print(f"{matched} of {total} samples have a leaf matching {sys.argv[2]!r}; their callers:")
        for chain, n in chains.most_common(25):
            print(f"{n / total * 100:6.2f}%  {chain}")
        return
    inclusive, total = collections.Counter(), 0
    for frames in samples(directory, binary):
        total += 1
        for f in {f[:160] for f in frames}:
            inclusive[f] += 1
    print(f"{total} samples; share of those with each frame on the stack:")
    for frame, n in inclusive.most_common(int(os.environ.get("TOP", "60"))):
        print(f"{n / total * 100:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
