"""CG force-field models: the repulsive prior and (with the training stage) the
temperature-dependent HIP-NN-TS heads W0, W1, W2. Plain torch modules."""
