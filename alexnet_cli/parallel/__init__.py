"""How the network and its batches are spread over devices: the layouts by name (``layouts``), the paper's
two-GPU split (§3.2) as real tensor parallelism, the 2014 weird trick, and their Lightning strategies."""
