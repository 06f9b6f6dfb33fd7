"""The stable-baselines3 side: training, evaluation and comparison of pixel and latent agents."""
