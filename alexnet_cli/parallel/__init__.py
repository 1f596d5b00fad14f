"""How the network and its batches are spread over devices. One module per layout, holding its network, its
``Layout`` and its Lightning strategy: ``towers`` (the paper's two-GPU split, §3.2, as real tensor parallelism)
and ``weird_trick`` (the 2014 sequel's); what both share in ``split`` (shard sizes, single-device checkpoints)
and ``collectives``; every layout by its name in ``layouts``."""
