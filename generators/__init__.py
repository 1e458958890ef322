"""generators: operators that make new models - LEMON expansion (with the bert2bert and
Net2Net baselines) and weight generation (D2NWG, p-diff, populations to learn from).
`generators.operators` registers them; the package's plugin (`generators.plugin`) tells
the zoo where to find them."""
