"""Every ``--help`` example in one list: each command shows its own under its help, and tests/cli/test_examples.py
runs every one of them. Those that need neither a GPU nor ImageNet run as written, in a folder where
``alexnet demo --out demo`` has run; the others run up to the check of their inputs (``train`` with --dry-run)."""

from dataclasses import dataclass
from typing import Literal

Needs = Literal["demo", "gpu", "imagenet", "minutes"]  # minutes: the demo itself, which the tests run cut short


@dataclass(frozen=True)
class Example:
    line: str  # as a user types it, from "alexnet"
    says: str  # what it does, in a few words
    needs: Needs = "demo"  # what it runs against


_DEMO_CHECKPOINT = "demo/run/checkpoints/last.ckpt"
_DEMO_IMAGE = "demo/data/val/*/ILSVRC2012_val_00000001.JPEG"  # the shell's glob finds its class folder

EXAMPLES: dict[str, tuple[Example, ...]] = {
    "demo": (Example("alexnet demo --out demo", "the whole tool on its demo data, about 2 minutes on 2 cores",
                     "minutes"),),
    "prepare-imagenet": (
        Example("alexnet prepare-imagenet --demo --out demo-data", "the demo's dataset alone, official format in"),
        Example("alexnet prepare-imagenet --source ~/ilsvrc2012 --out /data/imagenet",
                "the three official ILSVRC2012 files → a prepared dataset, on every core", "imagenet"),
        Example("alexnet prepare-imagenet --source ~/ilsvrc2012 --out /data/in100 --classes 100",
                "an ImageNet-100 style subset", "imagenet"),
        Example("alexnet prepare-imagenet --source ~/ilsvrc2012 --out /data/imagenet-packed --pack",
                "prepared straight into tar shards (see alexnet pack)", "imagenet"),
    ),
    "pack": (
        Example("alexnet pack demo/data --out demo/packed --shard-size 4M", "the demo's dataset in tar shards"),
        Example("alexnet pack /data/imagenet --out /scratch/imagenet-packed",
                "ImageNet for a cluster file system: ~140 shards of 1 GB, read by offset", "imagenet"),
    ),
    "train": (
        Example("alexnet train --recipe cpu-demo --data demo/data --out runs/try --set trainer.max_steps=2 "
                "--set model.fc_width=64", "a quick try: two steps of a narrow network"),
        Example("alexnet train --data demo/data --resume runs/try --set trainer.max_steps=4",
                "continue a run with its own recipe, two steps further"),
        Example("alexnet train --data demo/data --resume demo/run --out runs/longer --set trainer.max_epochs=9",
                "extend the demo's 8 epochs by one, into a new folder (a cosine schedule is re-planned over the 9; "
                "a plateau one needs no plan)"),
        Example("alexnet train --recipe single-gpu --data demo/data --dry-run",
                "what a run would do (devices, batches, steps), without training"),
        Example("alexnet train --recipe single-gpu --data /data/imagenet --out runs/paper",
                "the paper's training on one GPU", "gpu"),
    ),
    "eval": (
        Example(f"alexnet eval --checkpoint {_DEMO_CHECKPOINT} --data demo/data --ten-crop",
                "the paper's ten-crop test: top-1 and top-5"),
        Example("alexnet eval --weights alexnet-owt.pth --data /data/imagenet --center-crop",
                "torchvision's published AlexNet weights, as the owt arch", "imagenet"),
    ),
    "viz-filters": (Example(f"alexnet viz-filters --checkpoint {_DEMO_CHECKPOINT} --out fig3.png --scale 6",
                            "Figure 3: conv1's kernels, one block per tower"),),
    "predict": (Example(f"alexnet predict --checkpoint {_DEMO_CHECKPOINT} {_DEMO_IMAGE}",
                        "the top classes of an image, with names and probabilities"),),
    "neighbors": (Example(f"alexnet neighbors --checkpoint {_DEMO_CHECKPOINT} --data demo/data --query {_DEMO_IMAGE} "
                          "--out neighbors.png --k 6", "Figure 4: the training images nearest by fc7"),),
    "summary": (Example("alexnet summary --arch paper", "layers, shapes, 60,965,224 parameters"),),
    "report": (Example("alexnet report demo/run --out demo-report", "a run's curves beside the paper's errors"),),
    "recipes": (Example("alexnet recipes", "the recipes and the paper's ablations"),),
    "recipes show": (Example("alexnet recipes show single-gpu --set model.lrn=false",
                             "a recipe with every default filled in and a change applied"),),
    "benchmark data": (
        Example("alexnet benchmark data --data demo/data --recipe cpu-demo --batches 5 --warmup 1",
                "DALI's pipeline beside torchvision's DataLoader doing the same work"),
        Example("alexnet benchmark data --data /data/imagenet --recipe single-gpu --repeats 3",
                "the GPU pipeline on real photos", "gpu"),
    ),
    "benchmark model": (
        Example("alexnet benchmark model --arch owt --batch-size 8 --warmup 1 --batches 3",
                "forward and training step of a network on synthetic batches"),
        Example("alexnet benchmark model --arch paper --batch-size 128 --device gpu --matrix",
                "the paper net's speed switches one by one", "gpu"),
    ),
    "benchmark train": (Example("alexnet benchmark train --recipe cpu-demo --data demo/data --steps 2 --warmup 1 "
                                "--no-vs-synthetic --set data.batch_size=8 --set model.fc_width=64",
                                "alexnet train's loop beside a plain PyTorch loop"),),
    "benchmark traffic": (Example("alexnet benchmark traffic --recipe single-gpu --batch 128 --json traffic.json",
                                  "bytes and FLOPs of a training step, counted; its roofline img/s"),),
    "benchmark soak": (Example("alexnet benchmark soak --data demo/data --epochs 3 --settle 1 --out runs/soak "
                               "--set trainer.limit_train_batches=2 --set trainer.limit_val_batches=0 "
                               "--set model.fc_width=64", "memory after each epoch of a longer run"),),
    "benchmark comms": (Example("alexnet benchmark comms --batch-size 8 --layout two-gpu",
                                "the bytes a layout hands to collectives per device and step"),),
}


def epilog(command: str) -> str:
    """The examples under ``alexnet COMMAND --help`` (rich markup; an empty line between them keeps each its own
    paragraph)."""
    return "[bold]Examples[/]\n\n" + "\n\n".join(f"{example.says}: [cyan]{example.line}[/]"
                                                 for example in EXAMPLES[command])
