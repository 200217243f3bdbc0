"""The training layer: stage types, the stage trainer, checkpoints, distributed helpers and the stage cache."""
