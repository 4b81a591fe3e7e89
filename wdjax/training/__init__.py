"""The training system: a run's `config`, compiled `steps`, the loop (`train`), `batches`,
devices (`parallel`, `runtime`) and records on disk (`runlog`, `checkpoint`, `tensorboard`)."""
