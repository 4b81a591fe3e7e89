"""CPU kernels the models ask for on CPU only: the per-layer convolution plan (`plan`),
Winograd and im2col convolutions (`winograd`, `ops`) and a fused BatchNorm (`batchnorm`)."""
