"""The training system: a run's `config`, its compiled `steps`, the loop (`train`), batches,
devices (`parallel`, `runtime`), and the run's records on disk (`runlog`, `checkpoint`,
`tensorboard`)."""
