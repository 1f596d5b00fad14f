"""What the paper reports, in one place: its one-CNN validation errors and its ablations (§3–4).

The ablations are recipe switches, each with the effect the paper reports for it: they compose
with the paper-arch recipes through ``--set``; ``alexnet recipes`` lists them, ``alexnet eval``
and ``alexnet report`` set a run's errors beside the paper's.
"""

from dataclasses import dataclass

# §6, Table 2 (ILSVRC-2012 validation set, one CNN, the ten crops of §4.1): error in % of the images.
VAL_TOP1_ERROR, VAL_TOP5_ERROR = 40.7, 18.2


@dataclass(frozen=True)
class Ablation:
    overrides: tuple[str, ...]  # the --set values that switch the paper's choice off
    section: str
    removes: str
    paper_effect: str  # what the paper reports the choice is worth
    top1_points: float | None = None  # error points (%) the paper's choice saved (None: not given as a number)
    top5_points: float | None = None


ABLATIONS: tuple[Ablation, ...] = (
    Ablation(("model.lrn=false",), "§3.3", "local response normalisation",
             "lowers top-1/top-5 error by 1.4/1.2 points", 1.4, 1.2),
    Ablation(("model.overlap_pool=false",), "§3.4", "overlapping pooling (pools 2×2/2 instead of 3×3/2)",
             "lowers top-1/top-5 error by 0.4/0.3 points", 0.4, 0.3),
    Ablation(("data.pca_std=0",), "§4.1", "the PCA colour augmentation",
             "lowers top-1 error by over 1 point", 1.0, None),
    Ablation(("model.dropout=0",), "§4.2", "dropout in fc6 and fc7",
             "without it the network overfits substantially"),
    Ablation(("model.arch=paper-one-tower",), "§3.2", "the two-GPU net (one GPU, half the kernels of conv1-4)",
             "the two-GPU net lowers top-1/top-5 error by 1.7/1.2 points", 1.7, 1.2),
)
