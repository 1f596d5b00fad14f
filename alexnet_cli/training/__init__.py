"""The training runtime: the Trainer, the LightningModule, callbacks, checkpoints and resume."""
