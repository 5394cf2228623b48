"""Training: the one training loop (:mod:`.loop`), its settings (:mod:`.config`: ``TrainConfig``, and
``HoldsTrain`` for job configs that hold one) and batch helpers (:mod:`.batches`). Fine-tuning a
target is a pipeline job (:mod:`lumebench.pipeline.target`). Nothing heavy is imported here."""
