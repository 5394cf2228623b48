"""Training: the one training loop (:mod:`.loop`), batch helpers (:mod:`.batches`) and memorisation
fine-tuning of target models (:mod:`.finetune`, ``lume finetune``). Nothing heavy is imported here."""
