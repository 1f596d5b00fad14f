"""Looking at trained models: ten-crop evaluation, predictions, neighbours, filters, summaries, reports."""
