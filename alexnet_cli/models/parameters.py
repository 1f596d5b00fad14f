"""The order of a network's parameters that its optimizer state follows: a contract of the model.

An optimizer state addresses parameters by position. This tool always lists them as the weights, then
the biases, each in ``named_parameters()`` order (the two parameter groups of the paper's SGD, see
``training/optimizer``), so that a state saved in one layout (one device, towers, the weird trick)
resumes in any other: the split layouts convert it by these names.
"""


def is_bias(name: str) -> bool:
    return name.endswith(".bias")


def ordered_names(names: list[str]) -> list[str]:
    """Parameter names in the optimizer's order: the weights, then the biases (each in model order)."""
    return [n for n in names if not is_bias(n)] + [n for n in names if is_bias(n)]
