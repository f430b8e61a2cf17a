"""Evaluation: the paper's metrics (CLIP prompt similarity, masked DINO identity, CLIP-I, concept
accuracy), the benchmark scene sets, the prompt sets, the runner and the aggregation."""
