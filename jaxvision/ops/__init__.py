"""Array operations, pure JAX and jittable: box formats and overlaps, anchor points, DFL decoding
and non-maximum suppression (detection); the log-mel spectrogram (audio); farthest-point
sampling, k-nearest-neighbour grouping and the Chamfer distance (point clouds)."""
