"""Speed measurements, each beside a baseline: data pipeline, model, training loop, soak, communication."""
