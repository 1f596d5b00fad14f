"""The paper's two-GPU split (§3.2) as real tensor parallelism, and its Lightning strategy."""
