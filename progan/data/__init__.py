"""Datasets: the multi-resolution store, its writer (`progan prepare`) and the training loader."""
