"""Draw the quality frontier from ``quality.py --json`` rows: style (x) against content (y),
both lower = better (the two axes of ``nstbatch.engine.yardstick``), one colour per candidate, a small
dot per pair, a large one for the candidate's mean, a star for a published anchor. A thin line
joins two candidates' points of the same pair (``--join A B``), so a move that wins on both axes
points down and to the left; with it, a Markdown table says pair by pair whether the second is
lower on both axes, or trades one for the other.

    python benchmarks/plot_frontier.py rows.jsonl benchmarks/frontier.png [--join OLD NEW]

Needs matplotlib (``pip install -e '.[bench]'``).
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def draw(rows: list[dict], out: Path, join: tuple[str, str] | None = None, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 6), dpi=120)
    by_candidate: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_candidate[row["candidate"]].append(row)
    if join:
        points = {(r["candidate"], r["pair"]): (r["style"], r["content"]) for r in rows}
        for pair in {r["pair"] for r in rows}:
            if (join[0], pair) in points and (join[1], pair) in points:
                (x0, y0), (x1, y1) = points[(join[0], pair)], points[(join[1], pair)]
                axes.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "color": "0.6", "lw": 0.8})
    colours = plt.get_cmap("tab10")
    for index, (name, group) in enumerate(sorted(by_candidate.items(), key=lambda kv: kv[0].startswith("anchor"))):
        xs, ys = [r["style"] for r in group], [r["content"] for r in group]
        if name.startswith("anchor"):
            axes.scatter(xs, ys, marker="*", s=220, color="black", label=name, zorder=4)
            continue
        colour = colours(index % 10)
        seconds = [r["seconds"] for r in group if r["seconds"] is not None]
        label = f"{name} (mean {sum(xs) / len(xs):.3f} / {sum(ys) / len(ys):.3f}"
        label += f", {sum(seconds) / len(seconds):.0f} s)" if seconds else ")"
        axes.scatter(xs, ys, s=18, color=colour, alpha=0.7, zorder=2)
        axes.scatter([sum(xs) / len(xs)], [sum(ys) / len(ys)], s=120, color=colour, edgecolor="black",
                     label=label, zorder=3)
    axes.set_xlabel("style distance (0 = the painting's statistics)  ← better")
    axes.set_ylabel("content distance (0 = the photo)  ← better")
    axes.set_title(title or f"quality frontier: {len({r['pair'] for r in rows})} pairs at 512 px")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)


def compare(rows: list[dict], old: str, new: str) -> list[str]:
    """Pair by pair, whether ``new`` is lower than ``old`` on both axes (at the table's three
    decimals), and by how much: Markdown rows."""
    points = {(r["candidate"], r["pair"]): (round(r["style"], 3), round(r["content"], 3)) for r in rows}
    lines = [f"| pair | {old} | {new} | Δ style | Δ content | |", "| --- | --- | --- | --- | --- | --- |"]
    wins = 0
    for pair in dict.fromkeys(r["pair"] for r in rows):
        if (old, pair) not in points or (new, pair) not in points:
            continue
        (s0, c0), (s1, c1) = points[(old, pair)], points[(new, pair)]
        verdict = "lower on both" if s1 < s0 and c1 < c0 else "higher on both" if s1 >= s0 and c1 >= c0 else "trade-off"
        wins += verdict == "lower on both"
        lines.append(f"| {pair} | {s0:.3f} / {c0:.3f} | {s1:.3f} / {c1:.3f} | {s1 - s0:+.3f} | {c1 - c0:+.3f} | {verdict} |")
    lines.append(f"\n{new} is lower on both axes than {old} on {wins} of {len(lines) - 2} pairs.")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--join", nargs=2, metavar=("FROM", "TO"), help="two candidates to join pair by pair")
    ap.add_argument("--title", default="")
    args = ap.parse_args()
    rows = read_rows(args.rows)
    draw(rows, args.out, tuple(args.join) if args.join else None, args.title)
    print(f"wrote {args.out}")
    if args.join:
        print("\n".join(compare(rows, *args.join)))


if __name__ == "__main__":
    main()
