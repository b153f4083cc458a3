"""Array operations shared by detection tasks: box formats and overlaps, anchor points, DFL
decoding, non-maximum suppression. Pure JAX, jittable."""
