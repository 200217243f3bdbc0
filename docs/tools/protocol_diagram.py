"""Draws docs/img/protocol.png, the teacher -> student protocol:  python docs/tools/protocol_diagram.py"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "img" / "protocol.png"
BLUE, GREEN, GREY, ORANGE = "#dbe8f6", "#dcefdc", "#eeeeee", "#fbe3c8"


def box(ax, x, y, w, h, text, colour, bold_first=True):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=colour,
                                ec="#555555", lw=1))
    first, *rest = text.split("\n")
    ax.text(x + w / 2, y + h - 0.16, first, ha="center", va="top", fontsize=10.5,
            weight="bold" if bold_first else "normal")
    if rest:
        ax.text(x + w / 2, y + h - 0.48, "\n".join(rest), ha="center", va="top", fontsize=8.5, linespacing=1.35)


def arrow(ax, a, b, text="", dashed=False, offset=(0.0, 0.12), bend=0.0):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, lw=1.2, color="#333333",
                                 linestyle="--" if dashed else "-", shrinkA=2, shrinkB=2,
                                 connectionstyle=f"arc3,rad={bend}"))
    if text:
        ax.text((a[0] + b[0]) / 2 + offset[0], (a[1] + b[1]) / 2 + offset[1], text, ha="center", va="bottom",
                fontsize=8, style="italic", color="#333333")


fig, ax = plt.subplots(figsize=(10, 5.0), dpi=110)
ax.set_xlim(0, 10)
ax.set_ylim(-0.45, 4.6)
ax.axis("off")

box(ax, 0.1, 3.0, 1.9, 1.3, "clean faces\ntraining split\n(5 landmarks each)", GREY)
box(ax, 0.1, 0.4, 1.9, 1.3, "occluded faces\nthe same faces, through\nan occlusion plugin", GREY)
arrow(ax, (1.05, 3.0), (1.05, 1.7), "occlusion", offset=(0.38, -0.05))
box(ax, 2.9, 3.0, 2.0, 1.3, "1. teacher\ntrained on clean faces\nthen frozen", BLUE)
box(ax, 2.9, 0.4, 2.0, 1.3, "2. baseline\nteacher fine-tuned on\noccluded faces, task loss", ORANGE)
box(ax, 5.5, 0.4, 2.3, 1.3, "3. student\nfrom the teacher, on occluded\nfaces + a distiller's loss", GREEN)
arrow(ax, (2.0, 3.65), (2.9, 3.65))
arrow(ax, (2.0, 1.05), (2.9, 1.05))
arrow(ax, (3.9, 3.0), (3.9, 1.7), "weights", offset=(0.35, -0.05))
arrow(ax, (4.9, 3.3), (6.0, 1.7), "weights, and its outputs\non the clean faces", offset=(1.0, 0.0))
arrow(ax, (1.05, 0.4), (6.65, 0.4), "the same occluded faces", dashed=True, bend=0.12, offset=(0.0, -0.72))
box(ax, 8.15, 1.55, 1.8, 1.7, "4. evaluation\ntest faces, occluded:\nteacher, baseline,\nstudent; and the\nteacher on clean ones", GREY)
arrow(ax, (7.8, 1.05), (8.15, 1.8))
arrow(ax, (4.9, 3.75), (8.6, 3.25))
ax.text(9.05, 1.28, "gap closed =\n(student − baseline) /\n(teacher clean − baseline)", ha="center", va="top",
        fontsize=8.5)
fig.savefig(OUT, bbox_inches="tight", facecolor="white")
print(f"wrote {OUT}")
