"""Pretrained networks: the official ProGAN pickles and the GAN zoo checkpoints, read safely."""
